"""Champion and challenger on the same holdout: when BASE's model may score the PR's test rows,
and the gate's mode that follows (pipelines/review/holdout.py, gate.compare).

Schema changes and the gate's mode hold for every task; rescoring BASE's model on the PR's rows
is a binary model's only (another task's falls back to an unpaired bootstrap, with a note).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.metrics import (
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    evaluation_metrics,
)
from pipelines.params import GateParams, load_section
from pipelines.review.gate import Side, compare
from pipelines.review.holdout import predictions, rescore, schema_change
from pipelines.schema import Feature, Schema, Target
from tests.monitoring.test_refresh import raw_table
from tests.support.columns import PARAMS, pick, project_schema
from tests.support.targets import binary_only

SCHEMA = project_schema()
RESCORING = binary_only(SCHEMA, "only a binary model's test rows are rescored with BASE's model")


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


def pr_predictions(ids: list[int]) -> pd.DataFrame:
    return predictions(
        np.array(ids), np.array([0, 1] * (len(ids) // 2)), np.linspace(0.1, 0.9, len(ids)), 0.5
    )


@RESCORING
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


@RESCORING
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
    "regression": Target(column="y", task="regression"),
    "multiclass": Target(column="y", task="multiclass", classes=("a", "b", "c")),
}


@pytest.mark.parametrize("task", list(OTHER_TARGETS))
def test_a_model_of_another_task_is_not_rescored(task: str, tmp_path: Path) -> None:
    other = SCHEMA.model_copy(update={"target": OTHER_TARGETS[task]})
    holdout, why = rescore(
        raw_table(SCHEMA),
        pr_predictions([1, 2]),
        base_schema=other,
        pr_schema=other,
        base_train_ids=np.array([3, 4]),
        base_model=tmp_path / "no model",
        thresholds=(0.5, 0.5),
    )
    assert holdout is None
    assert why == f"a new holdout is scored for binary models only, not {task}"


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
