"""The one registry of the model's metrics: name, label, direction and how each is computed.

Every part that shows or judges a metric reads it here: the evaluate stage writes the point
values (scikit-learn's definitions), the gate and the card resample the weighted ones, the
monitor and the bento's labels pick theirs by name. Each metric has two functions that agree:

- ``point(labels, probabilities, predicted)``: its value on the rows as they are;
- ``weighted(rows, counts)``: its value for many resamples at once. Each resample is a row of
  counts (how often each test row was drawn), and the metric is a weighted sum over the rows
  sorted once by score (:class:`Sorted`). With all counts 1 it equals the point value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # params.py reads the registry: loading params needs no pandas
    import pandas as pd

Better = Literal["higher", "lower"]
COLUMNS = ("id", "label", "probability", "predicted")  # of eval/predictions.csv
WeightedFunction = Callable[["Sorted", np.ndarray], np.ndarray]
PointFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on the test rows (the columns of ``eval/predictions.csv``)."""

    ids: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Predictions:
        """Take the predictions out of a frame with the columns id, label, probability, predicted.

        Raises:
            ValueError: A column is missing or the table is empty.
        """
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing or frame.empty:
            raise ValueError(f"expected columns {list(COLUMNS)} and rows; missing {missing}")
        return cls(
            ids=frame["id"].to_numpy(),
            label=frame["label"].to_numpy(dtype=np.int8),
            probability=frame["probability"].to_numpy(dtype=np.float64),
            predicted=frame["predicted"].to_numpy(dtype=np.int8),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def problem(self) -> str | None:
        """What makes these predictions unusable (NaN or out-of-range values), if anything."""
        bad = ~np.isfinite(self.probability) | (self.probability < 0) | (self.probability > 1)
        if bad.any():
            return f"{int(bad.sum())} probabilities are NaN or outside [0, 1]"
        if not np.isin(self.label, (0, 1)).all() or not np.isin(self.predicted, (0, 1)).all():
            return "labels and predicted labels must be 0 or 1"
        return None

    def take(self, rows: np.ndarray) -> Predictions:
        """The predictions of the given row positions, in that order."""
        return Predictions(
            self.ids[rows], self.label[rows], self.probability[rows], self.predicted[rows]
        )


# --- weighted: many resamples at once ------------------------------------------------------------


@dataclass(frozen=True)
class Sorted:
    """Test rows sorted once by descending probability, with the groups of tied scores."""

    order: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray
    starts: np.ndarray  # first position of each group of equal probabilities

    @classmethod
    def of(cls, predictions: Predictions) -> Sorted:
        """Sort ``predictions`` by descending probability (NaN last)."""
        order = np.argsort(-predictions.probability, kind="stable")
        probability = predictions.probability[order]
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = probability[1:] != probability[:-1]
        return cls(
            order=order,
            label=predictions.label[order].astype(np.float64),
            probability=probability,
            predicted=predictions.predicted[order].astype(np.float64),
            starts=np.flatnonzero(new_group),
        )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _class_weights(rows: Sorted, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight of positives and of negatives in each group of tied scores, per resample."""
    positive = np.add.reduceat(counts * rows.label, rows.starts, axis=1)
    negative = np.add.reduceat(counts * (1.0 - rows.label), rows.starts, axis=1)
    return positive, negative


def roc_auc(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    positive, negative = _class_weights(rows, counts)
    # negatives scored strictly lower than each group: all negatives minus those up to it
    total_negative = negative.sum(axis=1, keepdims=True)
    lower = total_negative - np.cumsum(negative, axis=1)
    pairs = (positive * (lower + 0.5 * negative)).sum(axis=1)
    total = positive.sum(axis=1) * total_negative[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def pr_auc(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Average precision: precision at each threshold weighted by the recall it adds."""
    positive, negative = _class_weights(rows, counts)
    true_positive = np.cumsum(positive, axis=1)
    precision = _divide(true_positive, true_positive + np.cumsum(negative, axis=1))
    total = positive.sum(axis=1)
    has_positive = total > 0
    average = (positive * precision).sum(axis=1) / np.where(has_positive, total, 1.0)
    has_negative = negative.sum(axis=1) > 0
    return np.where(has_positive & has_negative, average, np.nan)


def log_loss(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood (probabilities clipped as scikit-learn clips them)."""
    eps = np.finfo(np.float64).eps
    p = np.clip(rows.probability, eps, 1 - eps)
    loss = -(rows.label * np.log(p) + (1 - rows.label) * np.log1p(-p))
    return np.asarray((counts @ loss) / counts.sum(axis=1))


def brier(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Mean squared difference between probability and label."""
    return np.asarray((counts @ (rows.probability - rows.label) ** 2) / counts.sum(axis=1))


def _confusion(rows: Sorted, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted true positives, false positives, false negatives and row totals."""
    tp = counts @ (rows.predicted * rows.label)
    fp = counts @ (rows.predicted * (1 - rows.label))
    fn = counts @ ((1 - rows.predicted) * rows.label)
    return tp, fp, fn, counts.sum(axis=1).astype(np.float64)


def accuracy(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of rows whose predicted label is right."""
    _, fp, fn, n = _confusion(rows, counts)
    return np.asarray((n - fp - fn) / n)


def precision(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of predicted positives that are positive."""
    tp, fp, _, _ = _confusion(rows, counts)
    return _divide(tp, tp + fp)


def recall(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of positives predicted positive."""
    tp, _, fn, _ = _confusion(rows, counts)
    return _divide(tp, tp + fn)


def f1(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Harmonic mean of precision and recall at the decision threshold."""
    tp, fp, fn, _ = _confusion(rows, counts)
    return _divide(2 * tp, 2 * tp + fp + fn)


# --- point: scikit-learn's definitions, on the rows as they are -----------------------------


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _roc_auc_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.roc_auc_score(y, p)) if _both_classes(y) else float("nan")


def _pr_auc_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.average_precision_score(y, p)) if _both_classes(y) else float("nan")


def _log_loss_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.log_loss(y, p, labels=[0, 1]))


def _brier_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.brier_score_loss(y, p, pos_label=1))


def _accuracy_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.accuracy_score(y, predicted))


def _precision_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.precision_score(y, predicted, zero_division=0))


def _recall_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.recall_score(y, predicted, zero_division=0))


def _f1_point(y: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn import metrics

    return float(metrics.f1_score(y, predicted, zero_division=0))


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric: how people read it, which way is better, and its two functions."""

    name: str
    label: str
    better: Better
    point: PointFunction
    weighted: WeightedFunction
    headline: bool = False  # printed by the evaluate stage and carried as a label of the bento

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.better == "higher" else -1


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("roc_auc", "ROC AUC", "higher", _roc_auc_point, roc_auc, headline=True),
        Metric("pr_auc", "PR AUC (average precision)", "higher", _pr_auc_point, pr_auc, True),
        Metric("log_loss", "Log loss", "lower", _log_loss_point, log_loss, headline=True),
        Metric("brier", "Brier score", "lower", _brier_point, brier),
        Metric("accuracy", "Accuracy", "higher", _accuracy_point, accuracy),
        Metric("precision", "Precision", "higher", _precision_point, precision),
        Metric("recall", "Recall", "higher", _recall_point, recall),
        Metric("f1", "F1", "higher", _f1_point, f1, headline=True),
    )
}
HEADLINE = tuple(name for name, metric in METRICS.items() if metric.headline)


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Every metric of the registry for labels ``y``, probabilities ``p`` and a threshold.

    ROC and PR AUC are NaN when ``y`` holds a single class (they are undefined there). Besides
    the metrics: the threshold, the number of rows and the positive rate.
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    predicted = (p >= threshold).astype(int)
    values: dict[str, float] = {name: m.point(y, p, predicted) for name, m in METRICS.items()}
    return values | {
        "threshold": float(threshold),
        "rows": len(y),
        "positive_rate": float(np.mean(y)),
    }


def point_metrics(predictions: Predictions, names: list[str]) -> dict[str, float]:
    """The metrics of the predictions as they are (every row counted once)."""
    rows = Sorted.of(predictions)
    ones = np.ones((1, len(predictions)))
    return {name: float(METRICS[name].weighted(rows, ones)[0]) for name in names}


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of ``samples``; NaN when any sample is NaN (fail closed)."""
    if not np.all(np.isfinite(samples)):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)
