"""Behavioural tests any model of this template must pass, whatever its table.

Skill is measured against a dummy classifier on the same test rows, by margins any table with
some signal clears (the gate's floors in ``params.yaml`` hold each model to its own bar).
Invariance needs no knowledge of the columns. Directional tests do: they state what the domain
says must happen, so each model writes its own in a file next to this one (the example model
keeps its own so; a commented-out sketch to adapt is at the end of this file).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import log_loss, roc_auc_score

from pipelines.core.features import feature_names
from pipelines.params import TrainParams
from pipelines.schema import Schema
from tests.conftest import Trained, fit_on

# How far above the dummy's 0.5 a model's ROC AUC must be: a model that learns anything of
# use clears it; one that ignores its features (a broken encoding, shuffled labels) does not.
AUC_MARGIN = 0.1


def dummy_scores(trained: Trained) -> np.ndarray:
    """The prior's probability for every test row: what knowing nothing of the features gives."""
    dummy = DummyClassifier(strategy="prior").fit(trained.x_test, trained.y_test)
    return dummy.predict_proba(trained.x_test)[:, 1]


def test_beats_a_dummy_classifier_by_a_clear_margin(trained: Trained) -> None:
    dummy = dummy_scores(trained)
    p = trained.model.predict_proba(trained.x_test)[:, 1]
    assert roc_auc_score(trained.y_test, dummy) == pytest.approx(0.5)
    assert roc_auc_score(trained.y_test, p) > 0.5 + AUC_MARGIN
    # Better probabilities too, not only a better ranking.
    assert log_loss(trained.y_test, p) < log_loss(trained.y_test, dummy)


def test_the_baseline_also_learns(raw: pd.DataFrame, schema: Schema, trained: Trained) -> None:
    params = TrainParams.model_validate(
        trained.params.model_dump(mode="json") | {"model": "logistic_regression"}
    )
    baseline = fit_on(raw, schema, params)
    p = baseline.model.predict_proba(baseline.x_test)[:, 1]
    assert roc_auc_score(baseline.y_test, p) > 0.5 + AUC_MARGIN
    assert log_loss(baseline.y_test, p) < log_loss(baseline.y_test, dummy_scores(baseline))


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
    np.testing.assert_allclose(alone, together[:20], rtol=0, atol=1e-7)


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
