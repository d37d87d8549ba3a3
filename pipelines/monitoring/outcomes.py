"""What the model's decisions on served rows turned out to be worth, and to whom: late labels.

**Value** (``value:`` in params): on the served rows that have a late label, at the model's own
decisions (a binary model's threshold from its ``meta.json``, a multiclass model's gain matrix):

- *expected* per 1,000 rows: what the model expected when it decided, its probabilities taken as
  calibrated. A binary row scored ``p`` and decided ``d`` is expected to gain
  ``p·G[1, d] + (1 - p)·G[0, d]``; a multiclass row ``Σ_a p_a·G[a, d]``; times the row's amount.
  A regression's prediction says nothing of its own error (its interval says where the truth
  lies, not how the error is spread inside it), so a regression gets no expected value;
- *realised* per 1,000 rows: each row's gain for its label and decision
  (:meth:`pipelines.core.value.ValueModel.gains`), with a percentile bootstrap interval, and the
  paired interval of realised - expected (the same rows drawn for both);
- beside them the test rows' value per 1,000 (``value_per_1000`` of ``eval/metrics.json``).

The amount column (``value.amount``) must be one of the request's fields (a feature): served rows
carry nothing else. When it is not, or is missing on some labelled rows, the report says so and
skips value; it never fails the comparison.

**Fairness** (``fairness:`` in params): :func:`pipelines.core.fairness.audit` of the labelled
served rows at the model's decisions, groups read from the served rows' sensitive columns, beside
the test rows' audit (``eval/fairness.json``). A realised gap whose whole interval lies above its
``fairness.max_gap`` (the gate's rule) is a *breach*: reported first in the markdown and listed in
the JSON, but it is not drift and leaves the exit code alone (retraining on the same kind of
rows does not narrow a gap; people decide what does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.fairness import GAPS, RATES, audit
from pipelines.core.formatting import cell, number
from pipelines.core.io import PipelineError
from pipelines.core.metrics import Task, decided_classes, interval
from pipelines.core.model import META
from pipelines.core.value import ValueModel, value_model
from pipelines.core.weighted import resample_blocks
from pipelines.params import FairnessParams, ValueParams
from pipelines.schema import Schema


def decision_gain(model_dir: Path) -> np.ndarray | None:
    """A multiclass model's gain matrix (actual x decided) from its ``meta.json``, if it has one."""
    meta_file = Path(model_dir) / META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    gain = meta.get("decision", {}).get("gain")
    return None if gain is None else np.asarray(gain, dtype=np.float64)


def decisions(
    task: Task, output: np.ndarray, threshold: float, gain: np.ndarray | None = None
) -> np.ndarray:
    """The model's decision per row: acted on (binary), a class position, or the prediction."""
    if task == "binary":
        return (np.asarray(output, dtype=np.float64) >= threshold).astype(np.int64)
    if task == "multiclass":
        return decided_classes(output, gain)
    return np.asarray(output, dtype=np.float64)


def expected_gains(
    model: ValueModel, output: np.ndarray, decided: np.ndarray, amount: np.ndarray | None
) -> np.ndarray | None:
    """Each row's gain expected from its probabilities at its decision; None for a regression."""
    if model.task == "regression":
        return None
    p = np.asarray(output, dtype=np.float64)
    by_class = np.column_stack([1.0 - p, p]) if model.task == "binary" else p
    # matrix[:, d] is the gain of deciding d for each actual class
    gain = (by_class * model.matrix[:, np.asarray(decided, dtype=np.int64)].T).sum(axis=1)
    return gain * amount if amount is not None else gain


def mean_interval(
    values: np.ndarray, resamples: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, times 1,000."""
    blocks = resample_blocks(len(values), resamples, seed)
    samples = np.concatenate([c.dot(values) / c.sum(axis=1) for c in blocks])
    return interval(samples * 1000.0, confidence)


@dataclass(frozen=True)
class Value:
    """Expected and realised value per 1,000 labelled served rows; ``skipped`` says why not."""

    currency: str
    unit: str
    amount: str | None
    confidence: float
    test: float | None  # the test rows' value_per_1000
    rows: int = 0
    expected: float | None = None  # None: a regression
    realised: float | None = None
    low: float | None = None
    high: float | None = None
    difference_low: float | None = None  # of realised - expected
    difference_high: float | None = None
    skipped: str | None = None

    def document(self) -> dict[str, Any]:
        """What ``reports/monitor.json`` carries under ``value``."""
        return {
            "currency": self.currency,
            "unit": self.unit,
            "amount": self.amount,
            "confidence": self.confidence,
            "rows": self.rows,
            "expected_per_1000": _round(self.expected),
            "realised_per_1000": _round(self.realised),
            "realised_low": _round(self.low),
            "realised_high": _round(self.high),
            "difference_low": _round(self.difference_low),
            "difference_high": _round(self.difference_high),
            "test_per_1000": _round(self.test),
            "skipped": self.skipped,
        }


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def served_amount(name: str, frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray | str:
    """The amount column's values of the labelled served ``rows``, or why there are none."""
    if name not in frame.columns:
        return (
            f"`value.amount` names {name!r}, which is not one of the request's fields (served "
            "rows carry the model's features only): value is not reported"
        )
    values = pd.to_numeric(frame[name].iloc[rows], errors="coerce").to_numpy(np.float64)
    missing = int((~np.isfinite(values)).sum())
    if missing:
        return (
            f"the amount {name!r} is missing or not a number on {missing:,} of {len(values):,} "
            "labelled served rows: value is not reported"
        )
    return values


def realised_value(
    params: ValueParams,
    schema: Schema,
    frame: pd.DataFrame,
    rows: np.ndarray,
    *,
    label: np.ndarray,
    output: np.ndarray,
    decided: np.ndarray,
    test: float | None,
) -> Value:
    """Expected and realised value of the labelled served ``rows`` (positions in ``frame``).

    Args:
        params: ``value:`` of params.yaml.
        schema: The model's schema.
        frame: The served rows' feature columns.
        rows: Positions of the labelled rows in ``frame``.
        label: Their labels, in the model's terms (as late labels are read).
        output: The model's output on them.
        decided: The model's decisions on them (:func:`decisions`).
        test: The test rows' ``value_per_1000``.
    """
    stated = Value(params.currency, params.unit, params.amount, params.confidence, test)
    target = schema.target
    try:
        model = value_model(params, target.task, tuple(target.labels))
    except PipelineError as error:
        return replace(stated, skipped=" ".join(str(error).split()))
    amount = None
    if model.amount is not None:
        found = served_amount(model.amount, frame, rows)
        if isinstance(found, str):
            return replace(stated, skipped=found)
        amount = found
    gains = model.gains(label, decided, amount)
    expected = expected_gains(model, output, decided, amount)
    low, high = mean_interval(gains, params.resamples, params.seed, params.confidence)
    difference: tuple[float | None, float | None] = (None, None)
    if expected is not None:
        difference = mean_interval(
            gains - expected, params.resamples, params.seed, params.confidence
        )
    return replace(
        stated,
        rows=len(gains),
        expected=None if expected is None else model.per_1000(expected),
        realised=model.per_1000(gains),
        low=low,
        high=high,
        difference_low=difference[0],
        difference_high=difference[1],
    )


@dataclass(frozen=True)
class Fairness:
    """The realised audit of the labelled served rows beside the test rows'."""

    params: FairnessParams
    task: Task
    rows: int
    realised: dict[str, Any]  # :func:`pipelines.core.fairness.audit`'s result
    test: dict[str, Any] | None  # eval/fairness.json
    skipped: dict[str, str] = field(default_factory=dict)  # column: why it is not audited

    @property
    def bounds(self) -> list[dict[str, Any]]:
        """Each realised gap with a bound of ``fairness.max_gap``, and whether it breaks it."""
        found = []
        for column, result in self.realised.items():
            for gap, bound in self.params.max_gap.items():
                value = result.get(gap)
                if not value:
                    continue  # fewer than two judged groups, or another task's gap
                breached = value["low"] is not None and value["low"] > bound
                found.append(
                    {"column": column, "gap": gap, **value, "bound": bound, "breached": breached}
                )
        return found

    @property
    def breaches(self) -> list[str]:
        """The realised gaps whose whole interval lies above their bound, in words."""
        return [
            f"realised {b['gap']} of {b['column']} is {b['value']:.3f} (interval "
            f"{b['low']:.3f} to {b['high']:.3f}), wholly above its bound {b['bound']}"
            for b in self.bounds
            if b["breached"]
        ]

    def document(self) -> dict[str, Any]:
        """What ``reports/monitor.json`` carries under ``fairness``."""
        return {
            "rows": self.rows,
            "min_group_rows": self.params.min_group_rows,
            "confidence": self.params.confidence,
            "realised": self.realised,
            "test": self.test,
            "bounds": self.bounds,
            "breaches": self.breaches,
            "skipped": self.skipped,
        }


def group_values(values: pd.Series, kind: str) -> np.ndarray:
    """A sensitive column's served values as pandas reads the raw table.

    So that groups match the test rows': a request log carries an integer column as floats, and
    1.0 is group "1" (a column with missing values stays floats, as pandas reads it).
    """
    if kind == "integer":
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and (numbers == np.floor(numbers)).all():
            return numbers.astype(np.int64).to_numpy(dtype=object)
    return values.to_numpy(dtype=object)


def realised_fairness(
    params: FairnessParams,
    schema: Schema,
    frame: pd.DataFrame,
    rows: np.ndarray,
    *,
    label: np.ndarray,
    decided: np.ndarray,
    test_file: Path,
) -> Fairness:
    """The audit of the labelled served ``rows`` (positions in ``frame``) at ``decided``."""
    task = schema.target.task
    columns, skipped = {}, {}
    for column in params.sensitive:
        if column not in frame.columns:
            skipped[column] = "not one of the request's fields: its groups are unknown"
            continue
        if column in schema.audit and frame[column].iloc[rows].isna().all():
            skipped[column] = "an audit column no request sent: its groups are unknown"
            continue
        feature = schema.checked.get(column)
        columns[column] = group_values(frame[column].iloc[rows], feature.type if feature else "")
    found = audit(
        task,
        label,
        decided,
        columns,
        min_group_rows=params.min_group_rows,
        resamples=params.resamples,
        seed=params.seed,
        confidence=params.confidence,
    )
    test = json.loads(test_file.read_text()) if Path(test_file).is_file() else None
    return Fairness(params, task, len(label), found, test, skipped)


def _money(value: float | None) -> str:
    return number(value) if value is None or not np.isfinite(value) else f"{value:,.2f}"


def value_section(value: Value | None) -> list[str]:
    """The report's value section (nothing without a value model or labels)."""
    if value is None:
        return []
    per = f"per 1,000 {cell(value.unit)}"
    lines = [f"#### Value {per} ({cell(value.currency)}), from late labels", ""]
    if value.skipped is not None:
        return [*lines, f"⚠️ {value.skipped}."]
    scaled = f", each row's gain times its `{cell(value.amount)}`" if value.amount else ""
    share = f"{value.confidence:.0%}"
    lines += [
        f"{value.rows:,} labelled served rows at the model's own decisions, by the value model of "
        f"`value:` in params.yaml{scaled}.",
        "",
        f"| | {per} |",
        "|---|---|",
    ]
    if value.expected is None:
        lines.append(
            "| expected when decided | n/a: a regression's prediction says nothing of its own "
            "error |"
        )
    else:
        lines.append(f"| expected when decided (its probabilities) | {_money(value.expected)} |")
    lines.append(
        f"| **realised** (the labels) | **{_money(value.realised)}** ({share} interval "
        f"{_money(value.low)} to {_money(value.high)}) |"
    )
    if value.expected is not None and value.realised is not None:
        lines.append(
            f"| realised - expected | {_money(value.realised - value.expected)} ({share} "
            f"interval {_money(value.difference_low)} to {_money(value.difference_high)}) |"
        )
    lines.append(f"| test rows (`eval/metrics.json`) | {_money(value.test)} |")
    if value.difference_high is not None and value.difference_high < 0:
        lines += [
            "",
            "⚠️ Realised value falls short of what the model expected beyond the bootstrap's "
            "noise: its probabilities overstate what its decisions earn on these rows.",
        ]
    return lines


def fairness_section(fairness: Fairness | None) -> list[str]:
    """The report's fairness section: per sensitive column, a table of groups, then the gaps."""
    if fairness is None:
        return []
    p = fairness.params
    lines = [
        "#### Fairness, from late labels",
        "",
        f"Rates at the model's decisions per group of the {fairness.rows:,} labelled served rows, "
        f"beside the test rows'; gaps between groups of at least {p.min_group_rows} rows, with "
        f"{p.confidence:.0%} bootstrap intervals. A gap whose whole interval lies above its "
        "`fairness.max_gap` is a breach: reported, not drift (the exit code is drift's alone).",
    ]
    rates = RATES[fairness.task]
    for column, why in fairness.skipped.items():
        lines += ["", f"**{cell(column)}**: {cell(why, 200)}."]
    for column, result in fairness.realised.items():
        test = (fairness.test or {}).get(column) or {}
        test_groups = test.get("groups") or {}
        header = " | ".join(f"{r} served | {r} test" for r in rates)
        lines += [
            "",
            f"**{cell(column)}**",
            "",
            f"| group | served rows | test rows | {header} |",
            "|---|---|---|" + "---|---|" * len(rates),
        ]
        names = sorted(set(result["groups"]) | set(test_groups))
        for name in names:
            served = result["groups"].get(name) or {}
            before = test_groups.get(name) or {}
            judged = "" if served.get("judged", False) else " (not judged)"
            judged = judged if served else " (none served)"
            values = " | ".join(
                f"{number(served.get(r), 3)} | {number(before.get(r), 3)}" for r in rates
            )
            lines.append(
                f"| {cell(name)}{judged} | {served.get('rows', 0):,} | "
                f"{before.get('rows', 0):,} | {values} |"
            )
        lines.append("")
        for gap in GAPS[fairness.task]:
            value = result.get(gap)
            was = (test.get(gap) or {}).get("value")
            if not value:
                lines.append(f"- {gap.replace('_', ' ')}: fewer than two judged groups served")
                continue
            bound = p.max_gap.get(gap)
            verdict = ""
            if bound is not None:
                if value["low"] is not None and value["low"] > bound:
                    verdict = f"; bound {bound}: ❌ wholly above it"
                elif value["value"] > bound:
                    verdict = f"; bound {bound}: ⚠️ above it, within the noise"
                else:
                    verdict = f"; bound {bound}: ✅ holds"
            lines.append(
                f"- {gap.replace('_', ' ')}: served **{number(value['value'], 3)}** (interval "
                f"{number(value['low'], 3)} to {number(value['high'], 3)}), test "
                f"{number(was, 3)}{verdict}"
            )
    return lines


def breach_line(fairness: Fairness | None) -> str | None:
    """The line under the verdict when a realised gap breaks its bound."""
    if fairness is None or not fairness.breaches:
        return None
    return (
        "❌ **Fairness**: "
        + "; ".join(cell(b, 300) for b in fairness.breaches)
        + (" (not drift: the exit code is unchanged; `fairness.breaches` in the JSON).")
    )
