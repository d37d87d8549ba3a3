"""Metrics and plot data computed from constructed predictions, where the answer is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.core import linear
from pipelines.core.curves import calibration_points, pr_points, roc_points
from pipelines.core.metrics import BinaryPredictions, classification_metrics
from pipelines.stages.evaluate import feature_importance, segment_metrics
from pipelines.stages.train import fit
from tests.support.training import small_train_params

Y = np.array([0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.6, 0.9, 0.7])


def noisy(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect probabilities."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=rows)
    y = (rng.uniform(size=rows) < p).astype(int)
    return y, p


# --- classification_metrics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "roc_auc", "pr_auc"),
    [
        pytest.param([0.1, 0.2, 0.8, 0.9], 1.0, 1.0, id="perfect-ranking"),
        pytest.param([0.9, 0.8, 0.2, 0.1], 0.0, 5 / 12, id="inverted-ranking"),
        pytest.param([0.5, 0.5, 0.5, 0.5], 0.5, 0.5, id="constant"),
    ],
)
def test_ranking_metrics(p: list[float], roc_auc: float, pr_auc: float) -> None:
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array(p), 0.5)
    assert metrics["roc_auc"] == pytest.approx(roc_auc)
    assert metrics["pr_auc"] == pytest.approx(pr_auc)


def test_perfect_predictions_score_perfectly() -> None:
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 1.0, 1.0]), 0.5)
    assert metrics["accuracy"] == metrics["precision"] == metrics["recall"] == metrics["f1"] == 1
    assert metrics["brier"] == pytest.approx(0.0)
    assert metrics["log_loss"] == pytest.approx(0.0, abs=1e-6)


def test_constant_half_probabilities() -> None:
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.full(4, 0.5), 0.5)
    assert metrics["log_loss"] == pytest.approx(math.log(2))
    assert metrics["brier"] == pytest.approx(0.25)
    # a probability equal to the threshold counts as positive
    assert metrics["recall"] == 1.0
    assert metrics["precision"] == 0.5


@pytest.mark.parametrize(
    ("threshold", "precision", "recall", "accuracy"),
    [
        (0.3, 3 / 5, 1.0, 4 / 6),
        (0.5, 2 / 3, 2 / 3, 4 / 6),
        (0.8, 1.0, 1 / 3, 4 / 6),
        (0.95, 0.0, 0.0, 3 / 6),  # nothing predicted positive: zero, not an error
    ],
    ids=["low", "middle", "high", "above-all"],
)
def test_threshold_trades_precision_for_recall(
    threshold: float, precision: float, recall: float, accuracy: float
) -> None:
    metrics = classification_metrics(Y, P, threshold)

    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    assert metrics["f1"] == pytest.approx(f1)
    assert metrics["threshold"] == threshold
    # ranking metrics do not depend on the threshold
    assert metrics["roc_auc"] == pytest.approx(classification_metrics(Y, P, 0.5)["roc_auc"])


def test_counts_and_rate() -> None:
    metrics = classification_metrics(Y, P, 0.5)
    assert metrics["rows"] == 6
    assert isinstance(metrics["rows"], int)
    assert metrics["positive_rate"] == 0.5


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_ranking_metrics(label: int) -> None:
    y = np.full(3, label)
    metrics = classification_metrics(y, np.array([0.2, 0.6, 0.9]), 0.5)

    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["pr_auc"])
    for name in ("log_loss", "brier", "accuracy", "precision", "recall", "f1"):
        assert math.isfinite(metrics[name]), name
    assert metrics["positive_rate"] == label
    assert metrics["accuracy"] == pytest.approx(2 / 3 if label else 1 / 3)


# --- curves -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p"),
    [
        pytest.param(Y, P, id="small"),
        pytest.param(*noisy(), id="noisy"),
        pytest.param(np.array([0, 1]), np.array([0.0, 1.0]), id="perfect"),
    ],
)
def test_roc_points_run_from_origin_to_one_one(y: np.ndarray, p: np.ndarray) -> None:
    points = roc_points(y, p)

    assert (points[0]["fpr"], points[0]["tpr"]) == (0.0, 0.0)
    assert (points[-1]["fpr"], points[-1]["tpr"]) == (1.0, 1.0)
    for before, after in itertools.pairwise(points):
        assert after["fpr"] >= before["fpr"]
        assert after["tpr"] >= before["tpr"]
        assert after["threshold"] <= before["threshold"]
    assert all(0.0 <= point["threshold"] <= 1.0 for point in points)  # no infinite threshold


def test_pr_points() -> None:
    points = pr_points(Y, P)

    # lowest threshold: everything predicted positive
    assert points[0] == {"recall": 1.0, "precision": 0.5, "threshold": 0.1}
    assert (points[-1]["recall"], points[-1]["precision"]) == (0.0, 1.0)
    recalls = [point["recall"] for point in points]
    assert recalls == sorted(recalls, reverse=True)
    thresholds = [point["threshold"] for point in points]
    assert thresholds == sorted(thresholds)
    # at threshold 0.6 the positives are rows 3 and 4 (p .6, .9) and row 5 (p .7): 2 of 3 true
    at = next(point for point in points if point["threshold"] == 0.6)
    assert at["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert at["recall"] == pytest.approx(2 / 3, abs=1e-6)


def test_calibration_points_on_a_constructed_case() -> None:
    p = np.array([0.0, 0.05, 0.15, 0.95, 0.97, 1.0])
    y = np.array([0, 0, 1, 1, 1, 0])

    points = calibration_points(y, p, bins=10)

    assert points == [
        {"predicted": 0.025, "observed": 0.0, "rows": 2},
        {"predicted": 0.15, "observed": 1.0, "rows": 1},
        {"predicted": pytest.approx(0.973333), "observed": pytest.approx(0.666667), "rows": 3},
    ]


@pytest.mark.parametrize("bins", [2, 5, 10, 20])
def test_calibration_counts_sum_to_rows(bins: int) -> None:
    y, p = noisy(rows=500)
    points = calibration_points(y, p, bins)

    assert len(points) <= bins
    assert sum(point["rows"] for point in points) == len(y)
    predicted = [point["predicted"] for point in points]
    assert predicted == sorted(predicted)
    # the probabilities are calibrated by construction: observed tracks predicted overall
    weighted = sum(point["observed"] * point["rows"] for point in points) / len(y)
    assert weighted == pytest.approx(y.mean(), abs=1e-5)


# --- feature_importance -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression"])
def test_feature_importance_is_normalised_and_ranked(kind: str) -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=["weak", "strong", "noise"])
    x.loc[x.index[::7], "noise"] = np.nan  # the baseline then adds an indicator column
    y = (3 * x["strong"] + 0.5 * x["weak"] > 0).to_numpy().astype(int)
    model = fit(x, y, small_train_params(kind))
    if kind != "xgboost":  # evaluate reads a linear model back as its numbers
        model = linear.of(model, "binary", len(x.columns))

    importance = feature_importance(model, list(x.columns))

    assert sorted(point["feature"] for point in importance) == sorted(x.columns)
    assert sum(point["importance"] for point in importance) == pytest.approx(1.0, abs=1e-5)
    values = [point["importance"] for point in importance]
    assert values == sorted(values, reverse=True)
    assert all(value >= 0 for value in values)
    assert [point["feature"] for point in importance[:2]] == ["strong", "weak"]


# --- segment_metrics --------------------------------------------------------------------------


def test_segment_metrics_per_value() -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 1, 0])
    p = np.array([0.2, 0.8, 0.4, 0.3, 0.9, 0.6, 0.7, 0.1])
    segments = pd.DataFrame(
        {
            "plan": ["Monthly", "Monthly", None, "Yearly", "Yearly", "Monthly", None, "Yearly"],
            "senior": [0, 1, 0, 0, 1, 1, 0, np.nan],
        },
        index=[17, 3, 42, 8, 5, 11, 2, 99],  # rows align by position, not by index
    )

    result = segment_metrics(BinaryPredictions.at_threshold(y, y, p, 0.5), segments, threshold=0.5)

    assert set(result) == {"plan", "senior"}
    assert set(result["plan"]) == {"<missing>", "Monthly", "Yearly"}
    assert set(result["senior"]) == {"0.0", "1.0", "<missing>"}
    for column in result:
        assert sum(m["rows"] for m in result[column].values()) == len(y)
    monthly = result["plan"]["Monthly"]
    expected = classification_metrics(y[[0, 1, 5]], p[[0, 1, 5]], 0.5)
    assert monthly["rows"] == 3
    assert monthly["roc_auc"] == pytest.approx(expected["roc_auc"])
    assert monthly["precision"] == pytest.approx(expected["precision"])
    assert result["plan"]["<missing>"]["rows"] == 2
    # one row, one class: undefined ranking metrics, no exception
    assert result["senior"]["<missing>"]["rows"] == 1
    assert math.isnan(result["senior"]["<missing>"]["roc_auc"])


def test_segment_metrics_values_are_rounded() -> None:
    y, p = noisy(rows=60)
    segments = pd.DataFrame({"part": np.where(np.arange(60) % 2 == 0, "even", "odd")})
    result = segment_metrics(BinaryPredictions.at_threshold(y, y, p, 0.5), segments, threshold=0.5)
    for metrics in result["part"].values():
        for name, value in metrics.items():
            if not math.isnan(value):
                assert round(value, 6) == value, name
