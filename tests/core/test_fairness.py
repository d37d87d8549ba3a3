"""Fairness: rates per group and gaps, against pandas group-bys computed here.

The committed audit (``eval/fairness.json``) is checked against ``eval/predictions.csv`` and the
raw table; the synthetic cases check small groups, intervals and the gate's bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.fairness import GAPS, audit
from pipelines.params import FairnessParams
from pipelines.review.gate import fairness_failures

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"


def rates_by_hand(label: pd.Series, acted: pd.Series, group: pd.Series) -> pd.DataFrame:
    """Selection rate, TPR and FPR per group, by pandas."""
    frame = pd.DataFrame({"y": label, "d": acted, "g": group})
    return frame.groupby("g").apply(
        lambda f: pd.Series(
            {
                "rows": len(f),
                "selection_rate": f.d.mean(),
                "tpr": f.d[f.y == 1].mean(),
                "fpr": f.d[f.y == 0].mean(),
            }
        ),
        include_groups=False,
    )


def synthetic(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, decisions and groups a/b/c; group c is small and acted on at another rate."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b", "c"], dtype=object), n, p=[0.6, 0.38, 0.02])
    label = (rng.random(n) < 0.3).astype(int)
    lift = np.where(group == "b", 0.15, np.where(group == "c", 0.6, 0.0))
    acted = (rng.random(n) < 0.2 + 0.5 * label + lift).astype(int)
    return label, acted, group


def test_rates_and_gaps_equal_a_group_by_and_small_groups_are_not_judged() -> None:
    label, acted, group = synthetic()
    found = audit(
        "binary",
        label,
        acted,
        {"g": group},
        min_group_rows=100,
        resamples=200,
        seed=0,
        confidence=0.95,
    )["g"]
    expected = rates_by_hand(pd.Series(label), pd.Series(acted), pd.Series(group))
    for name, row in expected.iterrows():
        got = found["groups"][name]
        assert got["rows"] == row["rows"]
        assert got["judged"] == (row["rows"] >= 100)
        for rate in ("selection_rate", "tpr", "fpr"):
            assert got[rate] == pytest.approx(row[rate], abs=1e-6), (name, rate)
    judged = expected[expected["rows"] >= 100]  # c, acted on far more, is left out of the gaps
    dp = judged["selection_rate"].max() - judged["selection_rate"].min()
    eo = max(judged["tpr"].max() - judged["tpr"].min(), judged["fpr"].max() - judged["fpr"].min())
    assert found["demographic_parity_difference"]["value"] == pytest.approx(dp, abs=1e-6)
    assert found["equalized_odds_difference"]["value"] == pytest.approx(eo, abs=1e-6)
    for gap in GAPS["binary"]:
        assert found[gap]["low"] <= found[gap]["value"] <= found[gap]["high"]


def test_the_interval_narrows_with_more_rows() -> None:
    def width(n: int) -> float:
        label, acted, group = synthetic(n)
        g = audit(
            "binary",
            label,
            acted,
            {"g": group},
            min_group_rows=n // 10,  # a and b, never c
            resamples=300,
            seed=0,
            confidence=0.95,
        )["g"]["demographic_parity_difference"]
        return float(g["high"] - g["low"])

    assert width(8000) < 0.6 * width(1000)


def test_regression_and_multiclass_gaps_are_of_their_own_rates() -> None:
    group = np.array(["x"] * 60 + ["y"] * 60, dtype=object)
    truth = np.zeros(120)
    predicted = np.where(group == "x", 1.0, 3.0)
    found = audit(
        "regression",
        truth,
        predicted,
        {"g": group},
        min_group_rows=10,
        resamples=100,
        seed=0,
        confidence=0.9,
    )["g"]
    assert found["mae_difference"]["value"] == pytest.approx(2.0)
    classes = np.where(group == "x", 0, 1)
    right = audit(
        "multiclass",
        classes,
        np.zeros(120, int),
        {"g": group},
        min_group_rows=10,
        resamples=100,
        seed=0,
        confidence=0.9,
    )["g"]
    assert right["accuracy_difference"]["value"] == pytest.approx(1.0)


def test_the_gate_fails_a_gap_whose_whole_interval_is_above_its_bound() -> None:
    label, acted, group = synthetic()
    found = audit(
        "binary",
        label,
        acted,
        {"g": group},
        min_group_rows=100,
        resamples=300,
        seed=0,
        confidence=0.95,
    )
    gap = found["g"]["demographic_parity_difference"]
    below = FairnessParams(
        sensitive=("g",), max_gap={"demographic_parity_difference": gap["low"] - 0.01}
    )
    inside = FairnessParams(
        sensitive=("g",), max_gap={"demographic_parity_difference": gap["low"] + 0.001}
    )
    (failure,) = fairness_failures(found, below)
    assert "demographic_parity_difference of g" in failure
    assert fairness_failures(found, inside) == []  # the interval reaches under the bound
    missing = FairnessParams(sensitive=("g", "h"), max_gap={})
    assert fairness_failures(found, missing) == [
        "fairness: eval/fairness.json has no audit of h: run dvc repro"
    ]
