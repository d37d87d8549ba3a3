"""Champion and challenger on the same holdout: when BASE's model may score the PR's test rows,
and the gate's mode that follows (pipelines/review/holdout.py, gate.compare).

Every test holds for every task: the generic ones on this repository's schema, and BASE's model
rescored on its own table's test rows for a regression and a multiclass model (the binary one in
tests/e2e/test_pr.py, through a real data-change pull request).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.features import read_features
from pipelines.core.metrics import (
    METRICS,
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    evaluation_metrics,
    read_predictions,
)
from pipelines.core.model import read_target
from pipelines.params import GateParams, load_section
from pipelines.review.gate import Side, compare
from pipelines.review.holdout import rescore, schema_change
from pipelines.schema import Feature, Schema, Target, read_raw
from tests.monitoring.test_refresh import raw_table
from tests.support.columns import PARAMS, pick, project_schema
from tests.support.tasks import Project

SCHEMA = project_schema()


def with_features(schema: Schema, features: dict[str, Feature]) -> Schema:
    return schema.model_copy(update={"features": features})


def test_the_same_schema_or_other_ranges_let_base_score() -> None:
    assert schema_change(SCHEMA, SCHEMA) is None
    name = pick(SCHEMA, "integer", "number", high=True)
    if name is None:
        pytest.skip("the schema has no numeric feature with an upper bound")
    feature = SCHEMA.features[name]
    wider = feature.model_copy(update={"max": (feature.max or 0) * 2 + 1})
    assert schema_change(SCHEMA, with_features(SCHEMA, {**SCHEMA.features, name: wider})) is None


def test_a_new_column_is_a_schema_change() -> None:
    added = {**SCHEMA.features, "new_signal": Feature(type="number", min=0, max=1)}
    assert schema_change(SCHEMA, with_features(SCHEMA, added)) == "new column 'new_signal'"
    assert schema_change(with_features(SCHEMA, added), SCHEMA) == "removed column 'new_signal'"


def test_a_new_category_is_a_schema_change() -> None:
    name = pick(SCHEMA, "category")
    if name is None:
        pytest.skip("the schema has no category feature")
    feature = SCHEMA.features[name]
    more = feature.model_copy(update={"categories": (*(feature.categories or ()), "brand new")})
    changed = with_features(SCHEMA, {**SCHEMA.features, name: more})
    assert schema_change(SCHEMA, changed) == f"new category 'brand new' of '{name}'"


def test_another_type_is_a_schema_change() -> None:
    name = pick(SCHEMA, "integer")
    if name is None:
        pytest.skip("the schema has no integer feature")
    feature = SCHEMA.features[name].model_copy(update={"type": "number"})
    changed = with_features(SCHEMA, {**SCHEMA.features, name: feature})
    assert schema_change(SCHEMA, changed) == f"'{name}' changed type from integer to number"


def pr_predictions(ids: list[int]) -> Predictions:
    return task_predictions(np.array(ids), seed=1)


def test_a_schema_change_falls_back_before_any_model_is_read(tmp_path: Path) -> None:
    added = {**SCHEMA.features, "new_signal": Feature(type="number", min=0, max=1)}
    holdout, why = rescore(
        raw_table(SCHEMA),
        pr_predictions([1, 2]),
        base_schema=SCHEMA,
        pr_schema=with_features(SCHEMA, added),
        base_train_ids=np.array([3, 4]),
        base_model=tmp_path / "no model",
        thresholds=(0.5, 0.5),
    )
    assert holdout is None
    assert why == "a schema change (new column 'new_signal')"


def test_rows_base_trained_on_are_left_out_and_all_of_them_is_no_holdout(tmp_path: Path) -> None:
    holdout, why = rescore(
        raw_table(SCHEMA),
        pr_predictions([1, 2]),
        base_schema=SCHEMA,
        pr_schema=SCHEMA,
        base_train_ids=np.array([1, 2, 5]),
        base_model=tmp_path / "no model",
        thresholds=(0.5, 0.5),
    )
    assert holdout is None
    assert why == "BASE's model was trained on every one of the PR's test rows"


OTHER_TARGETS = {
    "binary": Target(column="y", task="binary", positive="yes", values=("no", "yes")),
    "regression": Target(column="y", task="regression"),
    "multiclass": Target(column="y", task="multiclass", classes=("a", "b", "c")),
}


@pytest.mark.parametrize("task", list(OTHER_TARGETS))
def test_another_target_is_a_schema_change(task: str) -> None:
    other = SCHEMA.model_copy(update={"target": OTHER_TARGETS[task]})
    assert schema_change(SCHEMA, other) == "the target changed"


def test_base_is_rescored_on_the_new_holdout_of_every_task(task_model: Project) -> None:
    """BASE's model is the PR's here, so rescored through the serving scorer it must give what
    the evaluate stage wrote, on the rows it did not train on, with the same metrics."""
    made = task_model
    task, classes = read_target(made.path("model"))
    pr = read_predictions(pd.read_csv(made.path("predictions.csv")), task, classes)
    trained_on = pr.ids[:7]  # as if BASE had trained on seven of the PR's test rows
    holdout, why = rescore(
        read_raw(made.path("raw.csv")),
        pr,
        base_schema=made.schema,
        pr_schema=made.schema,
        base_train_ids=np.concatenate([read_features(made.path("train.parquet"))[2], trained_on]),
        base_model=made.path("model"),
        thresholds=(0.5, 0.5),
    )
    assert holdout is not None, why
    assert holdout.excluded == 7
    rest = pr.take(np.arange(7, len(pr)))
    assert list(holdout.base.ids) == list(holdout.pr.ids) == list(rest.ids)
    assert list(holdout.base.label) == list(rest.label)
    # predictions.csv keeps 8 decimals of XGBoost's float32 output
    np.testing.assert_allclose(holdout.base.output, rest.output, atol=1e-6)
    if isinstance(rest, RegressionPredictions):
        assert isinstance(holdout.base, RegressionPredictions)
        width = holdout.base.high - holdout.base.low
        np.testing.assert_allclose(width, rest.high - rest.low, atol=1e-5)
    written = evaluation_metrics(rest)
    assert holdout.pr_metrics == written
    for name in METRICS[task]:
        assert holdout.base_metrics[name] == pytest.approx(written[name], abs=1e-5), name
    assert "threshold" not in holdout.base_metrics


def task_predictions(ids: np.ndarray, seed: int) -> Predictions:
    """Predictions of the schema's task on fixed labels (the same for every seed) with signal."""
    target = SCHEMA.target
    rows = len(ids)
    truth = np.random.default_rng(0)
    noise = np.random.default_rng(seed).random((rows, max(len(target.labels), 1)))
    if target.task == "regression":
        label = truth.normal(10, 3, rows)
        predicted = label + noise[:, 0] - 0.5
        return RegressionPredictions(ids, label, predicted, predicted - 1, predicted + 1)
    label = truth.integers(0, len(target.labels), rows)
    if target.task == "multiclass":
        p = noise + 2 * np.eye(len(target.labels))[label]
        return MulticlassPredictions.of(ids, label, p / p.sum(axis=1)[:, None], target.labels)
    p = np.clip(label * 0.6 + noise[:, 0] * 0.4, 0, 1)
    return BinaryPredictions.at_threshold(ids, label, p, 0.5)


def side(p: Predictions) -> Side:
    return Side(p, evaluation_metrics(p, 0.5))


@pytest.mark.parametrize(
    ("new_holdout", "mode"), [(False, "paired"), (True, "paired on new holdout")]
)
def test_the_mode_says_when_base_was_scored_on_the_new_holdout(
    new_holdout: bool, mode: str
) -> None:
    gate = load_section("gate", GateParams, PARAMS)  # the task's gated metrics
    params = gate.model_copy(update={"resamples": 50})
    ids = np.arange(200)
    base, pr = task_predictions(ids, seed=1), task_predictions(ids, seed=2)
    result = compare(side(base), side(pr), params, new_holdout=new_holdout)
    assert result.mode == mode
    # Other rows on each side: unpaired, whatever was asked
    other = task_predictions(ids + 1000, seed=2)
    assert compare(side(base), side(other), params, new_holdout=new_holdout).mode == "unpaired"
