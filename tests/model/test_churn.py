"""Directional tests of the example's churn model: what the domain says must move the risk.

These name columns and values of the IBM Telco table on purpose: they belong to the example
only. A new model drops this file and writes its own next to ``test_behaviour.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.schema import Schema
from tests.conftest import Trained


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
