"""``make tune`` on a regression and a multiclass table: the task's metric, its direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core import features
from pipelines.core.metrics import BETTER, VALUE
from pipelines.core.model import make_model, predict
from pipelines.params import TrainParams, TuneParams, load_section
from pipelines.schema import dump_schema, infer_schema
from pipelines.tuning import tune
from tests.support.tasks import GATED, TABLES, table
from tests.support.tuning import tune_project


def neutral_value(task: str, classes: list[str]) -> dict[str, Any]:
    """A value section of the task: a right class gains 1; a unit of error costs 1."""
    if task == "regression":
        return {"currency": "EUR", "cost": {"under": 1.0, "over": 1.0}}
    return {"currency": "EUR", "gain": {c: {c: 1.0} for c in classes}}


@pytest.mark.parametrize("by", ["metric", "value"])
@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_each_task_is_tuned_on_its_gates_first_metric(
    task: str, by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's first gated metric, or value (then a regression's value is minus its mean
    absolute error, a multiclass model's its accuracy: a neutral value model is those)."""
    raw = table(task)
    _, _, target, _ = TABLES[task]
    schema = infer_schema(raw, target, "rownames")
    assert schema.target.task == task
    first = GATED[task][0] if by == "metric" else VALUE
    bound = "floor" if BETTER[first] == "higher" else "ceiling"
    rule = {bound: 0.0 if bound == "floor" else 1e9, "tolerance": 0.1}
    value = neutral_value(task, [str(c) for c in schema.target.labels]) if by == "value" else None
    changes: dict[tuple[str, ...], Any] = {
        ("gate", "metrics"): {first: rule},
        ("tune", "trials"): 2,
        ("value",): value,
    }
    params = tune_project(tmp_path, raw, dump_schema(schema), monkeypatch, changes)
    current = load_section("train", TrainParams, params)  # trial 0's
    folds = load_section("tune", TuneParams, params)

    reports = ["--markdown", "reports/tune.md", "--json", "reports/tune.json"]
    assert tune.main(reports) == 0

    report = json.loads((tmp_path / "reports" / "tune.json").read_text())
    assert report["metric"] == first
    assert report["trials"] == 2
    sign = 1 if BETTER[first] == "higher" else -1
    assert sign * (report["best"] - report["baseline"]) >= 0
    if by == "value":
        # a neutral value model per 1,000 rows is minus the MAE (regression) or the accuracy
        # (multiclass) times 1,000: trial 0's folds, computed here
        x, y, ids = features.read_features(tmp_path / "train.parquet")
        fold = features.fold_of(pd.Series(ids), folds.folds, folds.seed)
        expected = []
        for k in range(folds.folds):
            model = make_model(current, task)
            model.fit(x[fold != k], y[fold != k])
            out = predict(model, x[fold == k], task)
            if task == "regression":
                expected.append(-np.mean(np.abs(out - y[fold == k])) * 1000)
            else:
                expected.append(np.mean(np.argmax(out, axis=1) == y[fold == k]) * 1000)
        np.testing.assert_allclose(report["history"][0]["folds"], expected, rtol=1e-6)
        assert report["history"][0]["threshold"] is None
    train = yaml.safe_load(params.read_text())["train"]
    for name, value in report["params"].items():
        section, key = name.split(".")
        assert train[section][key] == value
