"""The curves of a model's test predictions, as the plot points DVC and the PR draw.

Values are rounded to six decimals, so the plot files stay small and stable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Points = list[dict[str, Any]]


def rounded(value: float) -> float:
    """``value`` to six decimals, as every plot and metrics file writes it."""
    return round(float(value), 6)


def roc_points(y: np.ndarray, p: np.ndarray) -> Points:
    """ROC curve as ``fpr``/``tpr``/``threshold`` points."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    return [
        {"fpr": rounded(f), "tpr": rounded(t), "threshold": rounded(min(h, 1.0))}
        for f, t, h in zip(fpr, tpr, thresholds, strict=True)
    ]


def pr_points(y: np.ndarray, p: np.ndarray) -> Points:
    """Precision-recall curve as ``recall``/``precision``/``threshold`` points."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    thresholds = np.append(thresholds, 1.0)
    return [
        {"recall": rounded(r), "precision": rounded(q), "threshold": rounded(h)}
        for r, q, h in zip(recall, precision, thresholds, strict=True)
    ]


def calibration_points(y: np.ndarray, p: np.ndarray, bins: int) -> Points:
    """Reliability diagram: mean predicted probability vs observed rate per probability bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    points = []
    for b in range(bins):
        rows = which == b
        if rows.any():
            points.append(
                {
                    "predicted": rounded(p[rows].mean()),
                    "observed": rounded(y[rows].mean()),
                    "rows": int(rows.sum()),
                }
            )
    return points


def quantile_points(actual: np.ndarray, predicted: np.ndarray, bins: int) -> Points:
    """A regression's reliability: mean prediction and mean actual value per prediction bin.

    The bins hold equal numbers of rows; the keys are :func:`calibration_points`'s.
    """
    order = np.argsort(predicted, kind="stable")
    points = []
    for rows in np.array_split(order, min(bins, len(order))):
        points.append(
            {
                "predicted": rounded(predicted[rows].mean()),
                "observed": rounded(actual[rows].mean()),
                "rows": len(rows),
            }
        )
    return points
