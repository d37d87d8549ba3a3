"""Model quality on served rows: estimated from the scores alone, and realised from late labels.

Without labels, a binary model's scores, taken as calibrated probabilities, say what its
confusion matrix is expected to be: a row scored ``p`` at or above the decision threshold ``t``
is a true positive with probability ``p`` and a false positive with probability ``1 - p``, so
``E[TP] = sum(p_i for p_i >= t)``, ``E[FP] = sum(1 - p_i for p_i >= t)``, ``E[FN] = sum(p_i for
p_i < t)`` and ``E[TN] = sum(1 - p_i for p_i < t)``. The same estimate on the test rows shows how
far calibration alone moves it from the measured test metrics; a change between the two
estimates is the served rows' doing. With labels, the metrics are the evaluate stage's own
(:func:`pipelines.core.metrics.classification_metrics`), checked against the gate's floors
and ceilings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.core.metrics import classification_metrics

# What the expected confusion matrix gives, under the metrics file's names.
ESTIMATED = ("accuracy", "precision", "recall", "f1", "positive_rate")


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


def realised_quality(
    labels: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """The evaluate stage's metrics of the labelled served rows."""
    return classification_metrics(labels, probability, threshold)


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
