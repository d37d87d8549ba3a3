"""Behavioural tests any model of this template must pass, whatever its table and task.

Skill is measured against the dummy model (the prior, or the mean) on the same test rows, by
margins any table with some signal clears (the gate's floors in ``params.yaml`` hold each model
to its own bar): a binary or multiclass model ranks the classes better (ROC AUC) and gives better
probabilities (log loss); a regression explains some of the variance (R²) and errs less (RMSE).
Invariance needs no knowledge of the columns. Directional tests do: they state what the domain
says must happen, so each model writes its own in a file next to this one (the example model
keeps its own so; a commented-out sketch to adapt is at the end of this file).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.features import feature_names
from pipelines.core.metrics import evaluation_metrics
from pipelines.core.model import KINDS
from pipelines.params import TrainParams
from pipelines.schema import Schema
from tests.conftest import Trained, fit_on

# How far above the dummy's 0.5 a model's ROC AUC must be, and its R² above the dummy's 0: a
# model that learns anything of use clears it; one that ignores its features (a broken
# encoding, shuffled labels) does not.
AUC_MARGIN = 0.1
R2_MARGIN = 0.1
# The task's ranking metric (the dummy's is 0.5 or 0) and its loss (lower is better).
SKILL = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "r2"}
LOSS = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


def fit_kind(raw: pd.DataFrame, schema: Schema, trained: Trained, kind: str) -> Trained:
    """Another model kind with the committed params."""
    params = TrainParams.model_validate(trained.params.model_dump(mode="json") | {"model": kind})
    return fit_on(raw, schema, params)


def metrics(model: Trained, schema: Schema) -> dict[str, float]:
    return evaluation_metrics(model.test_predictions(schema), 0.5)


@pytest.fixture(scope="module")
def dummy(raw: pd.DataFrame, schema: Schema, trained: Trained) -> dict[str, float]:
    """The dummy's metrics on the test rows: what knowing nothing of the features gives."""
    return metrics(fit_kind(raw, schema, trained, "dummy"), schema)


def assert_beats(model: dict[str, float], dummy: dict[str, float], task: str) -> None:
    skill, loss = SKILL[task], LOSS[task]
    floor = 0.0 if task == "regression" else 0.5
    assert dummy[skill] == pytest.approx(floor, abs=0.02)
    assert model[skill] > floor + (R2_MARGIN if task == "regression" else AUC_MARGIN)
    assert model[loss] < dummy[loss]  # better probabilities (values) too, not only a ranking


def test_beats_the_dummy_model_by_a_clear_margin(
    trained: Trained, schema: Schema, dummy: dict[str, float]
) -> None:
    assert_beats(metrics(trained, schema), dummy, trained.task)


def test_the_linear_baseline_also_learns(
    raw: pd.DataFrame, schema: Schema, trained: Trained, dummy: dict[str, float]
) -> None:
    linear = "ridge" if trained.task == "regression" else "logistic_regression"
    assert linear in KINDS[trained.task]
    assert_beats(metrics(fit_kind(raw, schema, trained, linear), schema), dummy, trained.task)


def test_the_id_is_not_a_feature(trained: Trained, schema: Schema) -> None:
    # What the model was really fitted on and the matrix it scores, not what the schema promises.
    fitted = [str(name) for name in trained.model.feature_names_in_]
    assert fitted == feature_names(schema) == list(trained.x_test.columns)
    assert not [n for n in fitted if n == schema.id or n.startswith(f"{schema.id}=")]
    # Nor under another name: no column of the matrix holds the rows' ids.
    ids = pd.to_numeric(trained.test_raw[schema.id], errors="coerce").to_numpy(np.float64)
    x = trained.x_test.to_numpy(np.float64)
    assert not [c for c, column in zip(fitted, x.T, strict=True) if np.array_equal(column, ids)]


def test_prediction_does_not_depend_on_the_id(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw.copy()
    shuffled = rows.assign(**{schema.id: np.random.default_rng(0).permutation(rows[schema.id])})
    np.testing.assert_array_equal(trained.predict(rows, schema), trained.predict(shuffled, schema))


def test_prediction_does_not_depend_on_the_column_order(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw
    reordered = rows[list(reversed(rows.columns))]
    np.testing.assert_array_equal(trained.predict(rows, schema), trained.predict(reordered, schema))


def test_prediction_of_a_row_does_not_depend_on_its_batch(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw
    together = trained.predict(rows, schema)
    alone = np.concatenate([trained.predict(rows.iloc[[i]], schema) for i in range(20)])
    np.testing.assert_allclose(alone, together[:20], rtol=1e-6, atol=1e-6)


# A directional test states what the domain expects when one input changes, all else held, and
# checks the model agrees on (almost) every row. Copy it into a file of your model's own,
# name your columns and values, and say why the direction must hold:
#
# @pytest.mark.parametrize(
#     ("column", "riskier", "safer"),
#     [
#         # Applicants with a prior default record repay less often (a well-known credit signal).
#         ("Records", "yes", "no"),
#     ],
# )
# def test_directional_effects(
#     trained: Trained, schema: Schema, column: str, riskier: object, safer: object
# ) -> None:
#     rows = trained.test_raw
#     p_riskier = trained.predict(rows.assign(**{column: riskier}), schema)
#     p_safer = trained.predict(rows.assign(**{column: safer}), schema)
#     assert p_safer.mean() < p_riskier.mean()
#     assert np.mean(p_safer <= p_riskier) > 0.9
