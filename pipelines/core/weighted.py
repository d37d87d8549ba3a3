"""Metrics for many bootstrap resamples at once, per task (the registry's ``weighted`` functions).

Each function takes rows prepared once (:class:`Sorted` for a binary model, :class:`Classes` for a
multiclass one, :class:`Residuals` for a regression) and ``counts``: one row per resample, how
often each prepared row was drawn, in the prepared order (``counts[:, rows.order]``). The result
is the metric of every resample. With all counts 1 it is scikit-learn's value on the rows
(``tests/core/test_metrics.py`` holds them to it, with and without weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

# --- binary ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sorted:
    """Test rows sorted once by descending probability, with the groups of tied scores."""

    order: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray
    starts: np.ndarray  # first position of each group of equal probabilities

    @classmethod
    def of(cls, label: np.ndarray, probability: np.ndarray, predicted: np.ndarray) -> Sorted:
        """Sort rows by descending probability (NaN last); labels and predictions are 0/1."""
        order = np.argsort(-probability, kind="stable")
        probability = probability[order]
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = probability[1:] != probability[:-1]
        return cls(
            order=order,
            label=label[order].astype(np.float64),
            probability=probability,
            predicted=predicted[order].astype(np.float64),
            starts=np.flatnonzero(new_group),
        )


def resample_counts(rng: np.random.Generator, rows: int, resamples: int) -> np.ndarray:
    """``resamples`` bootstrap resamples of ``rows`` rows, as counts of each row per resample."""
    drawn = rng.integers(0, rows, size=(resamples, rows))
    offsets = (np.arange(resamples) * rows)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=resamples * rows)
    return counts.reshape(resamples, rows).astype(np.float64)


def resample_blocks(
    rows: int, resamples: int, seed: int, cells: int = 4_000_000
) -> Iterator[np.ndarray]:
    """Bootstrap counts (:func:`resample_counts`) in blocks of bounded size, seeded once.

    A block holds at most ``cells`` (resample, row) cells (~30 MB), whatever the rows.
    """
    rng = np.random.default_rng(seed)
    block = max(1, cells // max(rows, 1))
    for start in range(0, resamples, block):
        yield resample_counts(rng, rows, min(block, resamples - start))


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


# --- multiclass -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classes:
    """A multiclass model's rows: one-hot labels and predictions, and each class's ranking."""

    order: np.ndarray  # the rows as they are
    label: np.ndarray  # rows x classes, 1.0 where the row is of the class
    predicted: np.ndarray  # rows x classes, 1.0 where the class was predicted
    true_probability: np.ndarray  # the probability given to each row's own class
    per_class: tuple[Sorted, ...]  # one-vs-rest: the rows sorted by each class's probability

    @classmethod
    def of(cls, label: np.ndarray, probability: np.ndarray, predicted: np.ndarray) -> Classes:
        """Prepare rows with class positions ``label``/``predicted`` and a probability matrix."""
        k = probability.shape[1]
        one_hot = np.eye(k)[label]
        picked = np.eye(k)[predicted]
        return cls(
            order=np.arange(len(label)),
            label=one_hot,
            predicted=picked,
            true_probability=probability[np.arange(len(label)), label],
            per_class=tuple(
                Sorted.of(one_hot[:, c], probability[:, c], picked[:, c]) for c in range(k)
            ),
        )


def _per_class(rows: Classes, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted true positives, support and predicted count of each class, per resample."""
    return (
        counts @ (rows.label * rows.predicted),
        counts @ rows.label,
        counts @ rows.predicted,
    )


def class_log_loss(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Mean negative log of the probability given to the true class (clipped as scikit-learn)."""
    eps = np.finfo(np.float64).eps
    loss = -np.log(np.clip(rows.true_probability, eps, 1 - eps))
    return np.asarray((counts @ loss) / counts.sum(axis=1))


def class_accuracy(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Share of rows whose predicted class is right."""
    true_positive, _, _ = _per_class(rows, counts)
    return np.asarray(true_positive.sum(axis=1) / counts.sum(axis=1))


def _recalls(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Recall of each class, NaN for a class absent from the resample."""
    true_positive, support, _ = _per_class(rows, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, true_positive / np.where(support > 0, support, 1.0), np.nan)


def balanced_accuracy(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (scikit-learn's balanced accuracy)."""
    return np.asarray(np.nanmean(_recalls(rows, counts), axis=1))


def min_class_recall(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """The lowest recall of a class present: the class the model serves worst."""
    return np.asarray(np.nanmin(_recalls(rows, counts), axis=1))


def macro_f1(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Mean F1 over every class (0 for a class neither present nor predicted)."""
    true_positive, support, predicted = _per_class(rows, counts)
    return np.asarray(_divide(2 * true_positive, support + predicted).mean(axis=1))


def roc_auc_ovr(rows: Classes, counts: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest ROC AUC over the classes (NaN when a class is absent)."""
    per_class = [
        roc_auc(sorted_rows, counts[:, sorted_rows.order]) for sorted_rows in rows.per_class
    ]
    return np.asarray(np.mean(per_class, axis=0))


# --- regression -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Residuals:
    """A regression's rows sorted once by absolute error (for the error's quantiles)."""

    order: np.ndarray
    label: np.ndarray  # centred on the mean label, so R²'s sums stay exact
    error: np.ndarray  # prediction - label
    inside: np.ndarray  # 1.0 where the label lies within the interval

    @classmethod
    def of(
        cls, label: np.ndarray, predicted: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> Residuals:
        """Prepare rows from labels, predictions and interval ends."""
        error = predicted - label
        order = np.argsort(np.abs(error), kind="stable")
        inside = ((low <= label) & (label <= high)).astype(np.float64)
        return cls(order, (label - label.mean())[order], error[order], inside[order])


def rmse(rows: Residuals, counts: np.ndarray) -> np.ndarray:
    """Root of the mean squared error."""
    return np.sqrt((counts @ rows.error**2) / counts.sum(axis=1))


def mae(rows: Residuals, counts: np.ndarray) -> np.ndarray:
    """Mean absolute error."""
    return np.asarray((counts @ np.abs(rows.error)) / counts.sum(axis=1))


def r2(rows: Residuals, counts: np.ndarray) -> np.ndarray:
    """1 - squared error / squared deviation from the resample's mean label (NaN if constant)."""
    n = counts.sum(axis=1)
    mean = (counts @ rows.label) / n
    spread = counts @ rows.label**2 - n * mean**2
    error = counts @ rows.error**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 1e-12 * n, 1 - error / np.where(spread > 0, spread, 1.0), np.nan)


def coverage(rows: Residuals, counts: np.ndarray) -> np.ndarray:
    """Share of rows whose label lies within the predicted interval."""
    return np.asarray((counts @ rows.inside) / counts.sum(axis=1))


def error_quantile(q: float) -> Callable[[Residuals, np.ndarray], np.ndarray]:
    """The ``q`` quantile of the absolute error: the smallest with a share >= q at or under it.

    With all counts 1 it is numpy's ``inverted_cdf`` quantile.
    """

    def quantile(rows: Residuals, counts: np.ndarray) -> np.ndarray:
        reached = np.cumsum(counts, axis=1) >= q * counts.sum(axis=1, keepdims=True)
        return np.abs(rows.error)[reached.argmax(axis=1)]

    quantile.__doc__ = f"The {q:.0%} quantile of the absolute error."
    return quantile
