"""Behavioural tests of the trained churn model: skill, invariance and direction.

These name columns of this table on purpose: a new model brings its own behavioural tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import roc_auc_score

from pipelines.params import TrainParams
from pipelines.schema import Schema
from pipelines.stages import featurize
from tests.conftest import Trained, fit_on


def test_beats_a_dummy_classifier_by_a_clear_margin(trained: Trained) -> None:
    dummy = DummyClassifier(strategy="prior").fit(trained.x_test, trained.y_test)
    dummy_auc = roc_auc_score(trained.y_test, dummy.predict_proba(trained.x_test)[:, 1])
    model_auc = roc_auc_score(trained.y_test, trained.model.predict_proba(trained.x_test)[:, 1])
    assert dummy_auc == pytest.approx(0.5)
    assert model_auc > dummy_auc + 0.25


def test_the_baseline_also_learns(raw: pd.DataFrame, schema: Schema, trained: Trained) -> None:
    params = TrainParams.model_validate(
        trained.params.model_dump(mode="json") | {"model": "logistic_regression"}
    )
    baseline = fit_on(raw, schema, params)
    auc = roc_auc_score(baseline.y_test, baseline.model.predict_proba(baseline.x_test)[:, 1])
    assert auc > 0.8


def test_the_id_is_not_a_feature(trained: Trained, schema: Schema) -> None:
    # What the model was really fitted on and the matrix it scores, not what the schema promises.
    fitted = [str(name) for name in trained.model.feature_names_in_]
    assert fitted == featurize.feature_names(schema) == list(trained.x_test.columns)
    assert not [n for n in fitted if n == schema.id or n.startswith(f"{schema.id}=")]
    # Nor under another name: no column of the matrix holds the rows' ids.
    ids = pd.to_numeric(trained.test_raw[schema.id], errors="coerce").to_numpy(np.float64)
    x = trained.x_test.to_numpy(np.float64)
    assert not [c for c, column in zip(fitted, x.T, strict=True) if np.array_equal(column, ids)]


def test_prediction_does_not_depend_on_the_id(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw.copy()
    shuffled = rows.assign(**{schema.id: np.random.default_rng(0).permutation(rows[schema.id])})
    np.testing.assert_array_equal(trained.predict(rows, schema), trained.predict(shuffled, schema))


def test_prediction_of_a_row_does_not_depend_on_its_batch(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw
    together = trained.predict(rows, schema)
    alone = np.concatenate([trained.predict(rows.iloc[[i]], schema) for i in range(20)])
    np.testing.assert_allclose(alone, together[:20], rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("column", "worse", "better"),
    [
        # Long contracts keep customers: month-to-month churns far more than two-year.
        ("contract", "Month-to-month", "Two year"),
        # Automatic payments are stickier than electronic checks in this table.
        ("payment_method", "Electronic check", "Credit card (automatic)"),
    ],
)
def test_directional_category_effects(
    trained: Trained, schema: Schema, column: str, worse: str, better: str
) -> None:
    rows = trained.test_raw
    p_worse = trained.predict(rows.assign(**{column: worse}), schema)
    p_better = trained.predict(rows.assign(**{column: better}), schema)
    assert p_better.mean() < p_worse.mean()
    assert np.mean(p_better <= p_worse) > 0.9


def test_longer_tenure_lowers_churn_risk(trained: Trained, schema: Schema) -> None:
    rows = trained.test_raw
    # Hold monthly spend fixed and keep total charges consistent with the longer tenure.
    new = rows.assign(tenure=6, total_charges=rows["monthly_charges"] * 6)
    loyal = rows.assign(tenure=60, total_charges=rows["monthly_charges"] * 60)
    p_new = trained.predict(new, schema)
    p_loyal = trained.predict(loyal, schema)
    assert p_loyal.mean() < p_new.mean() - 0.1
    assert np.mean(p_loyal <= p_new) > 0.9
