"""Decisions in production: the recording rules and the selection-rate gap alert, by promtool.

Counters of decisions per group go in as a served model would export them; the alert must fire
exactly when two groups with enough decided rows are acted on at rates further apart than the
bound, and the value rules must give the value per 1,000 rows computed here by hand.

Mutations tried, each caught here: the rows a group needs set to 0 (the small group's case
fires); the ``other`` group judged (both firing cases change).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.monitoring import rules
from pipelines.params import FairnessParams, MonitorParams, RegisterParams, load_section
from pipelines.serving import names
from tests.support.promtool import needs_promtool, run_rule_tests, series, without_annotations

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
MODEL = load_section("register", RegisterParams, PARAMS).model_name
SHORT = load_section("monitor", MonitorParams, PARAMS).model_copy(
    update={"window": "10m", "alert_after": "2m"}
)
FAIRNESS = FairnessParams(
    sensitive=("g",), min_group_rows=50, max_gap={"demographic_parity_difference": 0.2}
)
IDS = {"namespace": "ns", "model": MODEL, "model_version": "v1"}
MINUTES = 40


def decisions(group: str, acted_per_minute: int, others_per_minute: int) -> list[dict[str, str]]:
    """A group's counters: rows acted on (decision "yes") and not ("no"), per minute."""
    labels = IDS | {"column": "g", "group": group}
    return [
        series(
            names.DECISIONS,
            labels | {"decision": d},
            [n * m for m in range(MINUTES)],
        )
        for d, n in (("yes", acted_per_minute), ("no", others_per_minute))
    ]


def groups() -> dict[str, object]:
    made = rules.rule_groups(SHORT, MODEL, 3, "binary", fairness=FAIRNESS, positive="yes")
    return without_annotations(made)


def gap_test(inputs: list[dict[str, str]], fires: bool) -> dict[str, object]:
    expected = [{"exp_labels": IDS | {"column": "g", "severity": "ticket"}}] if fires else []
    return {
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": "30m", "alertname": "ModelSelectionRateGap", "exp_alerts": expected}
        ],
    }


@needs_promtool
@pytest.mark.parametrize(
    ("b_acted", "b_others", "fires"),
    [
        (1, 9, True),  # a acted on at 0.5, b at 0.1: 0.4 apart, bound 0.2
        (4, 6, False),  # 0.5 and 0.4: 0.1 apart
        (0, 2, False),  # 0.5 and 0.0, but b has 20 rows in the window, under min_group_rows
    ],
)
def test_the_gap_alert_fires_only_past_its_bound_with_enough_rows(
    tmp_path: Path, b_acted: int, b_others: int, fires: bool
) -> None:
    inputs = decisions("a", 5, 5) + decisions("b", b_acted, b_others)
    inputs += decisions(names.OTHER_GROUP, 0, 10)  # acted on never, and never judged
    run_rule_tests(groups(), [gap_test(inputs, fires)], tmp_path)


@needs_promtool
def test_expected_value_per_1000_rows_and_per_hour(tmp_path: Path) -> None:
    total = IDS | {"column": "", "group": ""}
    inputs = [
        series(names.DECISIONS, total | {"decision": "yes"}, [5 * m for m in range(90)]),
        series(names.DECISIONS, total | {"decision": "no"}, [15 * m for m in range(90)]),
        series(names.EXPECTED_VALUE, total | {"part": "gain"}, [30 * m for m in range(90)]),
        series(names.EXPECTED_VALUE, total | {"part": "loss"}, [10 * m for m in range(90)]),
    ]
    # 20 rows and a value of 30 - 10 = 20 a minute: 1,000 per 1,000 rows, 1,200 an hour
    tests = [
        {
            "interval": "1m",
            "input_series": inputs,
            "promql_expr_test": [
                {
                    "eval_time": "80m",
                    "expr": 'model:expected_value_per_1000:10m{column=""}',
                    "exp_samples": [
                        {
                            "labels": _labels("model:expected_value_per_1000:10m", total),
                            "value": 1000,
                        }
                    ],
                },
                {
                    "eval_time": "80m",
                    "expr": "model:expected_value:increase1h",
                    "exp_samples": [
                        {"labels": _labels("model:expected_value:increase1h", IDS), "value": 1200}
                    ],
                },
                {
                    "eval_time": "80m",
                    "expr": 'model:selection_rate:ratio10m{column=""}',
                    "exp_samples": [
                        {"labels": _labels("model:selection_rate:ratio10m", total), "value": 0.25}
                    ],
                },
            ],
        }
    ]
    run_rule_tests(groups(), tests, tmp_path)


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_no_gap_alert_without_a_bound_and_no_decision_rules_for_a_regression() -> None:
    unbounded = FairnessParams(sensitive=("g",))
    made = rules.rule_groups(SHORT, MODEL, 3, "binary", fairness=unbounded, positive="yes")
    alerts = [r.get("alert") for g in made["groups"] for r in g["rules"]]
    assert "ModelSelectionRateGap" not in alerts
    regression = rules.rule_groups(SHORT, MODEL, 3, "regression", fairness=FAIRNESS)
    assert not [g for g in regression["groups"] if g["name"].endswith("-decisions")]
