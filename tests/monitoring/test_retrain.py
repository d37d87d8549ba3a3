"""When the monitoring report calls for retraining (pipelines/monitoring/retrain.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.monitoring import quality
from pipelines.monitoring.retrain import main, reasons
from pipelines.params import GateParams, load_section
from tests.support.columns import PARAMS, project_schema

RULES = load_section("gate", GateParams, PARAMS).metrics
# A gated metric that the scores alone estimate (a binary model's f1 at the threshold, a
# multiclass model's log loss), when the gate has one; a regression's scores estimate nothing
ESTIMATES = {"binary": quality.ESTIMATED, "multiclass": quality.ESTIMATED_CLASSES}
ESTIMATED = next((n for n in RULES if n in ESTIMATES.get(project_schema().target.task, ())), None)


def report(code: int = 0, **quality: Any) -> dict[str, Any]:
    return {
        "exit_code": code,
        "verdict": {0: "no drift", 1: "drift", 2: "no verdict"}[code],
        "drifting": ["a feature"] if code == 1 else [],
        "score_drift": False,
        "quality": {"estimated": {}, "test_estimated": {}, "realised": None, **quality},
    }


def test_no_drift_and_steady_quality_call_for_nothing() -> None:
    assert reasons(report(0), RULES) == []


def test_drift_calls_for_retraining() -> None:
    assert reasons(report(1), RULES) == ["drift in a feature"]


def test_a_realised_metric_past_its_bound_calls_for_retraining() -> None:
    name, rule = next((n, r) for n, r in RULES.items() if r.bound is not None)
    bound = {"value": 0.0, "bound": rule.bound, "better": rule.better, "broken": True}
    found = reasons(report(0, realised={"bounds": {name: bound}}), RULES)
    assert len(found) == 1
    assert found[0].startswith(f"realised {name} 0.0 is ")


@pytest.mark.skipif(
    ESTIMATED is None, reason="the schema has no classes: a regression's scores estimate nothing"
)
def test_an_estimated_drop_beyond_the_tolerance_calls_for_retraining() -> None:
    assert ESTIMATED is not None
    rule = RULES[ESTIMATED]
    before = 0.6
    within = before - rule.sign * rule.tolerance * 0.5
    beyond = before - rule.sign * rule.tolerance * 2
    steady = report(0, estimated={ESTIMATED: within}, test_estimated={ESTIMATED: before})
    assert reasons(steady, RULES) == []
    dropped = report(0, estimated={ESTIMATED: beyond}, test_estimated={ESTIMATED: before})
    (found,) = reasons(dropped, RULES)
    assert found.startswith(f"estimated {ESTIMATED} moved from 0.6000")


def test_no_verdict_fails_naming_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "monitor.json"
    file.write_text(json.dumps({"verdict": "error", "exit_code": 2, "reason": "too few rows"}))
    assert main([str(file), "--params", str(PARAMS)]) == 1
    assert "make monitor gave no verdict: too few rows" in capsys.readouterr().err

    file.write_text(json.dumps(report(1)))
    assert main([str(file), "--params", str(PARAMS)]) == 0
    outputs = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert outputs["retrain"] == "true"
    assert outputs["reason"] == "drift in a feature"
    assert outputs["branch"].startswith("retrain/")
    assert outputs["data"].endswith(".dvc")


def test_a_realised_metric_the_labels_leave_undefined_is_said_so() -> None:
    name, rule = next((n, r) for n, r in RULES.items() if r.bound is not None)
    bound = {"value": None, "bound": rule.bound, "better": rule.better, "broken": True}
    (found,) = reasons(report(0, realised={"bounds": {name: bound}}), RULES)
    assert found == (
        f"realised {name} is undefined on the labelled rows (its gate bound {rule.bound} "
        "cannot be checked)"
    )


def test_a_report_without_estimates_calls_for_nothing_without_drift_or_labels() -> None:
    """A regression's report: no estimate on either side, no labels."""
    assert reasons(report(0, estimated=None, test_estimated=None), RULES) == []
    assert reasons(report(1, estimated=None, test_estimated=None), RULES) == ["drift in a feature"]


def test_drift_of_the_score_alone_calls_for_retraining() -> None:
    """No feature drifts but the model's score (or a multiclass model's predicted class) does:
    the report's exit code is 1, and that is drift."""
    alone = report(1) | {"drifting": [], "score_drift": True}
    assert reasons(alone, RULES) == ["drift in the score"]
    classes = report(1) | {"drifting": [], "predicted_class_drift": True}
    assert reasons(classes, RULES) == ["drift in the predicted class"]
