"""Decisions in production: expected value per hour, selection rates by group, the gap alert.

The service counts a classifier's decisions and their expected value (``model_decisions_total``,
``model_expected_value_total``: :class:`pipelines.serving.telemetry.DecisionMetrics`), in total
(``column`` and ``group`` empty) and per group of each sensitive column of ``fairness:``. The
recording rules here turn them into what the dashboard shows and the alert judges:

- ``model:decision_rows:increase<window>``: decided rows per version, column and group;
- ``model:selection_rate:ratio<window>`` (binary): the share of those acted on (the positive
  class decided), the served side of evaluate's ``selection_rate``;
- ``model:expected_value:increase1h``: the value model's expected value of the decisions per
  hour; ``model:expected_value_by_group:increase<window>`` and
  ``model:expected_value_per_1000:<window>``: per group, and per 1,000 rows as evaluate says it.

``ModelSelectionRateGap`` fires when, over the window, the selection rates of a column's groups
with at least ``fairness.min_group_rows`` decided rows (``other`` left out) lie further apart than
``fairness.max_gap.demographic_parity_difference``, for ``monitor.alert_after``.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.core.metrics import Task
from pipelines.params import FairnessParams, MonitorParams
from pipelines.serving import names

VERSION = ("namespace", "model", "model_version")
GROUP = (*VERSION, "column", "group")


def _by(*labels: str) -> str:
    return "(" + ", ".join(labels) + ")"


def _pin(model: str, extra: str = "") -> str:
    return "{model=" + json.dumps(model) + extra + "}"


def decision_rules(
    params: MonitorParams, model: str, task: Task, positive: Any = None
) -> list[dict[str, Any]]:
    """The recording rules of decisions and their value (none for a regression)."""
    if task == "regression":
        return []
    w = params.window
    decided, rows = f"model:decisions:increase{w}", f"model:decision_rows:increase{w}"
    gain, loss = _pin(model, ', part="gain"'), _pin(model, ', part="loss"')
    worth = f"model:expected_value_by_group:increase{w}"
    total_gain = _pin(model, ', part="gain", column=""')
    total_loss = _pin(model, ', part="loss", column=""')
    rules = [
        {
            "record": decided,
            "expr": f"sum by {_by(*GROUP, 'decision')} "
            f"(increase({names.DECISIONS}{_pin(model)}[{w}]))",
        },
        {"record": rows, "expr": f"sum by {_by(*GROUP)} ({decided})"},
        {
            "record": worth,
            "expr": f"sum by {_by(*GROUP)} (increase({names.EXPECTED_VALUE}{gain}[{w}]))\n"
            f"- on {_by(*GROUP)}\n"
            f"sum by {_by(*GROUP)} (increase({names.EXPECTED_VALUE}{loss}[{w}]))",
        },
        {
            "record": f"model:expected_value_per_1000:{w}",
            "expr": f"1000 * {worth} / on {_by(*GROUP)} ({rows} > 0)",
        },
        {
            "record": "model:expected_value:increase1h",
            "expr": f"sum by {_by(*VERSION)} (increase({names.EXPECTED_VALUE}{total_gain}[1h]))\n"
            f"- on {_by(*VERSION)}\n"
            f"sum by {_by(*VERSION)} (increase({names.EXPECTED_VALUE}{total_loss}[1h]))",
        },
    ]
    if task == "binary":
        acted = f"{decided}{{decision={json.dumps(str(positive))}}}"
        rules.append(
            {
                "record": f"model:selection_rate:ratio{w}",
                "expr": f"sum by {_by(*GROUP)} ({acted})\n/ on {_by(*GROUP)} ({rows} > 0)",
            }
        )
    return rules


def gap_alerts(
    params: MonitorParams, fairness: FairnessParams | None, task: Task
) -> list[dict[str, Any]]:
    """``ModelSelectionRateGap``, when fairness bounds a binary model's selection-rate gap."""
    bound = None if fairness is None else fairness.max_gap.get("demographic_parity_difference")
    if task != "binary" or fairness is None or bound is None:
        return []
    w = params.window
    column = (*VERSION, "column")
    judged = (
        f'model:selection_rate:ratio{w}{{column!="", group!="{names.OTHER_GROUP}"}}\n'
        f"  and on {_by(*GROUP)} model:decision_rows:increase{w} >= {fairness.min_group_rows}"
    )
    gap = f"max by {_by(*column)} (\n  {judged}\n)\n- min by {_by(*column)} (\n  {judged}\n)"
    return [
        {
            "alert": "ModelSelectionRateGap",
            "expr": f"(\n{gap}\n) > {bound!r}",
            "for": params.alert_after,
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.model }}: selection rates by {{ $labels.column }} are "
                '{{ $value | printf "%.3f" }} apart',
                "description": "Over the last "
                + w
                + ", the groups of {{ $labels.column }} with at least "
                + str(fairness.min_group_rows)
                + ' decided rows are acted on at rates {{ $value | printf "%.3f" }} apart, '
                "more than fairness.max_gap.demographic_parity_difference "
                + f"({bound}) allows (model version {{{{ $labels.model_version }}}}). Compare "
                "with eval/fairness.json, and `make monitor` with late labels for the error "
                "rates by group.",
                "bound": str(bound),
            },
        }
    ]
