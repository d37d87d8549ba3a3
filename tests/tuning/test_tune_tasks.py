"""``make tune`` on a regression and a multiclass table: the task's metric, its direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.metrics import BETTER, METRICS
from pipelines.schema import dump_schema, infer_schema
from pipelines.tuning import tune
from tests.support.tasks import GATED, TABLES, table
from tests.support.tuning import tune_project


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_each_task_is_tuned_on_its_gates_first_metric(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = table(task)
    _, _, target, _ = TABLES[task]
    schema = infer_schema(raw, target, "rownames")
    assert schema.target.task == task
    first = GATED[task][0]
    bound = "floor" if BETTER[first] == "higher" else "ceiling"
    rule = {bound: 0.0 if bound == "floor" else 1e9, "tolerance": 0.1}
    changes: dict[tuple[str, ...], Any] = {
        ("gate", "metrics"): {first: rule},
        ("tune", "trials"): 2,
    }
    params = tune_project(tmp_path, raw, dump_schema(schema), monkeypatch, changes)

    reports = ["--markdown", "reports/tune.md", "--json", "reports/tune.json"]
    assert tune.main(reports) == 0

    report = json.loads((tmp_path / "reports" / "tune.json").read_text())
    assert report["metric"] == first
    assert report["trials"] == 2
    sign = METRICS[task][first].sign
    assert sign * (report["best"] - report["baseline"]) >= 0
    train = yaml.safe_load(params.read_text())["train"]
    for name, value in report["params"].items():
        section, key = name.split(".")
        assert train[section][key] == value
