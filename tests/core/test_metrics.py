"""The registry's resampled metrics equal scikit-learn's on every task, with and without weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from pipelines.core.metrics import (
    BETTER,
    METRICS,
    TASKS,
    MulticlassPredictions,
    RegressionPredictions,
    evaluation_metrics,
    point_metrics,
    read_predictions,
)

ROWS = 500
CLASSES = ("setosa", "versicolor", "virginica", "other")


def multiclass(signal: float, seed: int = 0) -> MulticlassPredictions:
    rng = np.random.default_rng(seed)
    label = rng.choice(4, size=ROWS, p=[0.5, 0.25, 0.2, 0.05])
    logits = rng.normal(size=(ROWS, 4)) + signal * np.eye(4)[label]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return MulticlassPredictions.of(np.arange(ROWS), label, p, CLASSES)


def regression(noise: float, seed: int = 0) -> RegressionPredictions:
    rng = np.random.default_rng(seed)
    label = rng.normal(10, 3, ROWS)
    predicted = label + rng.normal(0, noise, ROWS)
    return RegressionPredictions(np.arange(ROWS), label, predicted, predicted - 2, predicted + 2)


def weights() -> np.ndarray:
    return np.vstack([np.ones(ROWS), np.random.default_rng(5).poisson(1.0, ROWS)])


def test_multiclass_resampled_metrics_equal_scikit_learn() -> None:
    p = multiclass(2.0)
    rows = p.rows()
    labels = list(range(4))
    for weight in weights():
        present = np.unique(p.label[weight > 0])
        recalls = sk.recall_score(
            p.label, p.predicted, labels=present, average=None, sample_weight=weight
        )
        expected = {
            "log_loss": sk.log_loss(p.label, y_proba=p.probability, sample_weight=weight),
            "accuracy": sk.accuracy_score(p.label, p.predicted, sample_weight=weight),
            "balanced_accuracy": sk.balanced_accuracy_score(
                p.label, p.predicted, sample_weight=weight
            ),
            "macro_f1": sk.f1_score(
                p.label,
                p.predicted,
                labels=labels,
                average="macro",
                sample_weight=weight,
                zero_division=0,
            ),
            "roc_auc_ovr": np.mean(
                [
                    sk.roc_auc_score(p.label == c, p.probability[:, c], sample_weight=weight)
                    for c in labels
                ]
            ),
            "min_class_recall": min(recalls),
        }
        for name, value in expected.items():
            got = METRICS["multiclass"][name].weighted(rows, weight[None, rows.order])[0]
            assert got == pytest.approx(value, abs=1e-12), name


def test_regression_resampled_metrics_equal_scikit_learn() -> None:
    p = regression(1.5)
    rows = p.rows()
    for weight in weights():
        error = np.abs(p.predicted - p.label)
        repeated = np.repeat(error, weight.astype(int))
        expected = {
            "rmse": sk.root_mean_squared_error(p.label, p.predicted, sample_weight=weight),
            "mae": sk.mean_absolute_error(p.label, p.predicted, sample_weight=weight),
            "r2": sk.r2_score(p.label, p.predicted, sample_weight=weight),
            "coverage": np.average((p.low <= p.label) & (p.label <= p.high), weights=weight),
            "abs_error_p50": np.quantile(repeated, 0.5, method="inverted_cdf"),
            "abs_error_p90": np.quantile(repeated, 0.9, method="inverted_cdf"),
        }
        for name, value in expected.items():
            got = METRICS["regression"][name].weighted(rows, weight[None, rows.order])[0]
            assert got == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("rows", [1, 2, 7, 10, 80, 101, 1000])
def test_error_quantiles_match_numpy_at_every_size(rows: int) -> None:
    rng = np.random.default_rng(rows)
    label = rng.normal(size=rows)
    predicted = label + rng.normal(size=rows)
    p = RegressionPredictions(np.arange(rows), label, predicted, predicted, predicted)
    for q, name in ((0.5, "abs_error_p50"), (0.9, "abs_error_p90")):
        expected = np.quantile(np.abs(predicted - label), q, method="inverted_cdf")
        assert point_metrics(p, [name])[name] == expected
        assert METRICS["regression"][name].point(p) == expected


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_point_metrics_equal_the_evaluate_stage(task: str) -> None:
    p = multiclass(2.0) if task == "multiclass" else regression(1.0)
    written = evaluation_metrics(p)
    computed = point_metrics(p, list(METRICS[task]))
    for name, value in computed.items():
        assert value == pytest.approx(written[name], abs=1e-9), name
    assert written["rows"] == ROWS


def test_each_metric_is_better_the_way_the_registry_says() -> None:
    """A good model scores better than a poor one on every metric, in the registry's direction."""
    pairs = {
        "multiclass": (multiclass(4.0), multiclass(0.3)),
        "regression": (regression(0.5), regression(3.0)),
    }
    for task, (good, bad) in pairs.items():
        for name, metric in METRICS[task].items():
            assert metric.sign * (metric.point(good) - metric.point(bad)) > 0, name


def test_a_metric_name_improves_one_way_in_every_task() -> None:
    for task in TASKS:
        for name, metric in METRICS[task].items():
            assert metric.better == BETTER[name], (task, name)


def test_predictions_round_trip_through_their_csv_in_the_datas_terms(tmp_path) -> None:
    p = multiclass(2.0)
    frame = p.to_frame()
    assert set(frame["label"]) <= set(CLASSES)
    assert list(frame.columns[3:]) == [f"probability_{c}" for c in CLASSES]
    frame.to_csv(tmp_path / "p.csv", index=False)
    back = read_predictions(pd.read_csv(tmp_path / "p.csv"), "multiclass", CLASSES)
    assert (back.label == p.label).all()
    assert (back.predicted == p.predicted).all()
    r = regression(1.0)
    r.to_frame().to_csv(tmp_path / "r.csv", index=False)
    again = read_predictions(pd.read_csv(tmp_path / "r.csv"), "regression")
    assert again.predicted == pytest.approx(r.predicted, abs=1e-7)


def test_an_unknown_class_is_named() -> None:
    frame = multiclass(1.0).to_frame()
    frame.loc[3, "label"] = "dahlia"
    with pytest.raises(ValueError, match=r"1 labels are not classes.*dahlia"):
        read_predictions(frame, "multiclass", CLASSES)
