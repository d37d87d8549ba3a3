"""Champion and challenger on the same holdout: when BASE's model may score the PR's test rows,
and the gate's mode that follows (pipelines/review/holdout.py, gate.compare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.metrics import BinaryPredictions as Predictions
from pipelines.params import GateParams, load_section
from pipelines.review.gate import Side, compare
from pipelines.review.holdout import predictions, rescore, schema_change
from pipelines.schema import Feature, Schema
from tests.monitoring.test_refresh import raw_table
from tests.support.columns import PARAMS, pick, project_schema

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


def pr_predictions(ids: list[int]) -> pd.DataFrame:
    return predictions(
        np.array(ids), np.array([0, 1] * (len(ids) // 2)), np.linspace(0.1, 0.9, len(ids)), 0.5
    )


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


def side(frame: pd.DataFrame) -> Side:
    from pipelines.core.metrics import classification_metrics

    p = Predictions.from_frame(frame)
    return Side(p, classification_metrics(p.label, p.probability, 0.5))


@pytest.mark.parametrize(
    ("new_holdout", "mode"), [(False, "paired"), (True, "paired on new holdout")]
)
def test_the_mode_says_when_base_was_scored_on_the_new_holdout(
    new_holdout: bool, mode: str
) -> None:
    gate = load_section("gate", GateParams, PARAMS)
    params = gate.model_copy(update={"resamples": 50})
    rng = np.random.default_rng(0)
    ids = np.arange(200)
    label = rng.integers(0, 2, 200)
    base = predictions(ids, label, np.clip(label * 0.6 + rng.random(200) * 0.4, 0, 1), 0.5)
    pr = predictions(ids, label, np.clip(label * 0.6 + rng.random(200) * 0.4, 0, 1), 0.5)
    result = compare(side(base), side(pr), params, new_holdout=new_holdout)
    assert result.mode == mode
    # Other rows on each side: unpaired, whatever was asked
    other = predictions(ids + 1000, label, pr["probability"].to_numpy(), 0.5)
    assert compare(side(base), side(other), params, new_holdout=new_holdout).mode == "unpaired"
