"""Model quality on served rows: estimated from the outputs alone, and realised from late labels.

Without labels, a binary model's scores, taken as calibrated probabilities, say what its
confusion matrix is expected to be: a row scored ``p`` at or above the decision threshold ``t``
is a true positive with probability ``p`` and a false positive with probability ``1 - p``, so
``E[TP] = sum(p_i for p_i >= t)``, ``E[FP] = sum(1 - p_i for p_i >= t)``, ``E[FN] = sum(p_i for
p_i < t)`` and ``E[TN] = sum(1 - p_i for p_i < t)``. The same estimate on the test rows shows how
far calibration alone moves it from the measured test metrics; a change between the two
estimates is the served rows' doing.

A multiclass model's probabilities, taken as calibrated, say as much: a row is classified right
with probability ``max_k p_ik`` (the predicted class is the most probable one), so the expected
accuracy is the mean top probability; class ``k``'s expected share of the rows is the mean of
``p_ik``; and a row's expected log loss is ``-sum_k p_ik log p_ik`` (its class is ``k`` with
probability ``p_ik``), so the expected log loss is the mean entropy. Its other metrics (macro
F1, balanced accuracy, per-class recall) divide by how many rows each class truly holds, which
probabilities do not say row by row: they are left to labels.

A regression's prediction says nothing of its own error: without labels nothing is estimated.

With labels, the metrics are the evaluate stage's own for the task
(:func:`pipelines.core.metrics.evaluation_metrics`), checked against the gate's floors and
ceilings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.core.metrics import (
    METRICS,
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    Task,
    evaluation_metrics,
)

# What the expected confusion matrix gives, under the metrics file's names.
ESTIMATED = ("accuracy", "precision", "recall", "f1", "positive_rate")
# What a multiclass model's calibrated probabilities give, under the metrics file's names
ESTIMATED_CLASSES = ("accuracy", "log_loss")
# A multiclass model's expected and predicted share of each class: <prefix><class>
SHARE, PREDICTED_SHARE = "share_", "predicted_share_"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def expected_quality(probability: np.ndarray, threshold: float) -> dict[str, float]:
    """The expected confusion matrix and metrics of scores taken as calibrated probabilities.

    Args:
        probability: Positive-class probabilities of the rows.
        threshold: The decision threshold (``evaluate.threshold``).

    Returns:
        ``tp``, ``fp``, ``fn``, ``tn`` (expected counts), ``accuracy``, ``precision``,
        ``recall``, ``f1``, ``positive_rate`` (expected share of positive rows, as the metrics
        file's actual positive rate), ``predicted_positive_rate`` and ``rows``.
    """
    p = np.asarray(probability, dtype=np.float64)
    flagged = p >= threshold
    tp = float(p[flagged].sum())
    fp = float(flagged.sum()) - tp
    fn = float(p[~flagged].sum())
    tn = float((~flagged).sum()) - fn
    rows = p.size
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": _ratio(tp + tn, rows),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "positive_rate": _ratio(tp + fn, rows),
        "predicted_positive_rate": _ratio(float(flagged.sum()), rows),
        "rows": float(rows),
    }


def expected_class_quality(probability: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """Expected accuracy, log loss and class shares of calibrated multiclass probabilities.

    Args:
        probability: Rows x classes, in the order of ``classes`` (at least one row).
        classes: The schema's classes.

    Returns:
        ``accuracy`` (the mean top probability), ``log_loss`` (the mean entropy),
        ``share_<class>`` (the mean probability of each class: its expected share of the rows),
        ``predicted_share_<class>`` (the share of rows it is the most probable class of) and
        ``rows``.
    """
    p = np.asarray(probability, dtype=np.float64).reshape(-1, len(classes))
    rows = p.shape[0]
    expected = p.mean(axis=0)
    predicted = np.bincount(p.argmax(axis=1), minlength=len(classes)) / rows
    # 0 log 0 is 0: a class the model rules out adds nothing to the expected loss
    entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    result = {"accuracy": float(p.max(axis=1).mean()), "log_loss": float(entropy.mean())}
    result |= {f"{SHARE}{c}": float(expected[k]) for k, c in enumerate(classes)}
    result |= {f"{PREDICTED_SHARE}{c}": float(predicted[k]) for k, c in enumerate(classes)}
    return result | {"rows": float(rows)}


def estimated_quality(
    task: Task, output: np.ndarray, threshold: float, classes: Sequence[Any]
) -> dict[str, float] | None:
    """What the outputs alone say of the model's quality; None for a regression (nothing).

    Args:
        task: The model's task.
        output: The model's output per row (a probability, or rows x classes).
        threshold: A binary model's decision threshold.
        classes: A multiclass model's classes.
    """
    if task == "binary":
        return expected_quality(output, threshold)
    if task == "multiclass":
        return expected_class_quality(output, classes)
    return None


def served_predictions(
    task: Task,
    labels: np.ndarray,
    output: np.ndarray,
    threshold: float,
    *,
    classes: Sequence[Any] = (),
    interval: np.ndarray | None = None,
    gain: np.ndarray | None = None,
) -> Predictions:
    """The labelled served rows as the task's predictions, for the registry's metrics.

    Args:
        task: The model's task.
        labels: :func:`pipelines.monitoring.served.read_labels`'s values of the rows.
        output: The model's output of the rows.
        threshold: A binary model's decision threshold.
        classes: A multiclass model's classes.
        interval: A regression's intervals of the rows, rows x (low, high).
        gain: A multiclass model's gain matrix, when it decides by expected gain.
    """
    ids = np.arange(len(labels))
    if task == "multiclass":
        return MulticlassPredictions.of(ids, labels, output, classes, gain)
    if task == "regression":
        if interval is None:
            raise ValueError("a regression's served predictions need their intervals")
        return RegressionPredictions(ids, labels, output, interval[:, 0], interval[:, 1])
    return BinaryPredictions.at_threshold(ids, labels, output, threshold)


def realised_quality(predictions: Predictions, threshold: float) -> dict[str, float]:
    """The evaluate stage's metrics of the labelled served rows (the task's registry)."""
    return evaluation_metrics(predictions, threshold)


def gated(task: Task, rules: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's rules of the task's metrics: only those can be measured on its rows."""
    return {name: rule for name, rule in rules.items() if name in METRICS[task]}


def bounds(metrics: Mapping[str, float], rules: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each gated metric against its floor or ceiling (``gate.metrics`` of params.yaml).

    Args:
        metrics: Realised metrics.
        rules: Metric name to :class:`pipelines.params.MetricRule`.

    Returns:
        Per gated metric with a bound: ``value``, ``bound``, ``better`` and ``broken`` (NaN or
        on the wrong side of the bound).
    """
    result: dict[str, dict[str, Any]] = {}
    for name, rule in rules.items():
        if rule.bound is None:
            continue
        value = float(metrics.get(name, float("nan")))
        broken = not math.isfinite(value) or bool(rule.breaks_bound(value))
        result[name] = {
            "value": value,
            "bound": rule.bound,
            "better": rule.better,
            "broken": broken,
        }
    return result
