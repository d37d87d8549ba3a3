"""The sections of the pull-request comment that show a model's errors, per task.

Binary: the ROC and precision-recall curves. Multiclass: the confusion matrix and each class's
precision and recall. Regression: predicted against actual and the residuals, as binned charts.
Each compares BASE (when it has a model) with the PR; class names come from the data, which a
pull request can change, so they reach the comment only through
:func:`pipelines.core.formatting.cell`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.core.formatting import cell, number
from pipelines.core.metrics import MulticlassPredictions, Predictions, RegressionPredictions
from pipelines.review.charts import category_chart, chart, curve, plain
from pipelines.review.outputs import Outputs

BINS = 10  # bins of the actual value in the predicted-against-actual chart (deciles)
RESIDUAL_BINS = 15  # bins of the residuals' histogram
RESIDUAL_RANGE = 0.99  # the histogram spans this quantile of |residual|; the end bins take the rest
MATRIX_CLASSES = 12  # a confusion matrix of more classes keeps the largest and adds "other"
OTHER = "(other classes)"


def legend(sides: int) -> str:
    """Which colour is which side."""
    return "grey: base, orange: PR" if sides == 2 else "orange: PR"


def curves_section(base: Outputs | None, pr: Outputs) -> list[str]:
    """ROC and precision-recall curves of a binary model, base and PR, drawn inline."""
    frames = [o.predictions for o in (base, pr) if o is not None]
    lines = [f"#### Curves ({legend(len(frames))})", ""]
    lines += chart(
        "ROC", "False positive rate", "True positive rate", [curve(f, "roc") for f in frames]
    )
    lines.append("")
    lines += chart("Precision-recall", "Recall", "Precision", [curve(f, "pr") for f in frames])
    return lines


# --- multiclass -------------------------------------------------------------------------------


def confusion(predictions: MulticlassPredictions) -> np.ndarray:
    """Rows of each actual class (row) predicted as each class (column), classes in model order."""
    k = len(predictions.classes)
    flat = predictions.label.astype(np.int64) * k + predictions.predicted.astype(np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k)


@dataclass(frozen=True)
class ClassScores:
    """Each class's precision and recall (None where undefined: no row predicted or actual)."""

    precision: list[float | None]
    recall: list[float | None]
    rows: list[int]

    @classmethod
    def of(cls, matrix: np.ndarray) -> ClassScores:
        """The scores of a confusion matrix (:func:`confusion`)."""
        right = np.diag(matrix).astype(np.float64)
        predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
        return cls(
            precision=[float(r / n) if n else None for r, n in zip(right, predicted, strict=True)],
            recall=[float(r / n) if n else None for r, n in zip(right, actual, strict=True)],
            rows=[int(n) for n in actual],
        )


def merged(matrix: np.ndarray, keep: list[int]) -> np.ndarray:
    """The confusion matrix of the classes ``keep`` and one more, every other class merged."""
    k = len(matrix)
    group = np.full(k, len(keep))
    group[keep] = np.arange(len(keep))
    size = len(keep) + (len(keep) < k)
    out = np.zeros((size, size), dtype=np.int64)
    np.add.at(out, (group[:, None], group[None, :]), matrix)
    return out


def _change(after: int, before: int | None) -> str:
    if before is None:
        return f"{after:,}"
    return f"{after:,} ({after - before:+,})" if after != before else f"{after:,} (±0)"


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def confusion_section(base: MulticlassPredictions | None, pr: MulticlassPredictions) -> list[str]:
    """The PR's confusion matrix, each count with its change from BASE's.

    Over :data:`MATRIX_CLASSES` classes, the most frequent in the PR's test rows keep their row
    and column and the others are merged into one, so the table stays readable and small.
    """
    matrix = confusion(pr)
    before = confusion(base) if base is not None and base.classes == pr.classes else None
    keep = list(range(len(pr.classes)))
    if len(keep) > MATRIX_CLASSES:
        keep = sorted(np.argsort(-matrix.sum(axis=1), kind="stable")[: MATRIX_CLASSES - 1])
    names = [cell(pr.classes[i], 30) for i in keep] + [OTHER] * (len(keep) < len(pr.classes))
    matrix = merged(matrix, keep)
    before = None if before is None else merged(before, keep)
    how = "the PR's count and its change from BASE" if before is not None else "the PR's count"
    lines = [
        f"#### Confusion matrix (rows: actual class, columns: predicted; {how})",
        "",
        "| actual ↓ predicted → | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for i, name in enumerate(names):
        counts = [
            _change(int(matrix[i, j]), None if before is None else int(before[i, j]))
            for j in range(len(names))
        ]
        lines.append(f"| **{name}** | " + " | ".join(counts) + " |")
    if base is not None and before is None:
        lines += ["", "BASE's model has other classes: its counts are not compared."]
    return lines


def class_section(base: MulticlassPredictions | None, pr: MulticlassPredictions) -> list[str]:
    """Each class's precision and recall, base and PR, and their change."""
    after = ClassScores.of(confusion(pr))
    same = base is not None and base.classes == pr.classes
    before = ClassScores.of(confusion(base)) if same and base is not None else None
    lines = [
        "#### Precision and recall per class",
        "",
        "| class | rows | precision base | PR | Δ | recall base | PR | Δ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(pr.classes):
        cells = [f"**{cell(name, 30)}**", f"{after.rows[i]:,}"]
        for kind in ("precision", "recall"):
            now = getattr(after, kind)[i]
            old = None if before is None else getattr(before, kind)[i]
            cells += [number(old, 4), number(now, 4), number(_delta(now, old), 4, True)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --- regression -------------------------------------------------------------------------------


def actual_bins(actual: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner edges that cut the actual values into ``bins`` bins of about equal rows."""
    edges = np.quantile(actual, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def bin_means(which: np.ndarray, values: np.ndarray, bins: int) -> list[float | None]:
    """The mean of ``values`` in each bin ``0..bins-1`` (None for an empty bin)."""
    sums = np.bincount(which, weights=values, minlength=bins)
    counts = np.bincount(which, minlength=bins)
    return [float(s / n) if n else None for s, n in zip(sums, counts, strict=True)]


def residual_edges(residuals: list[np.ndarray], bins: int = RESIDUAL_BINS) -> np.ndarray:
    """Equal-width edges of the residuals' histogram, symmetric around 0.

    They span :data:`RESIDUAL_RANGE` of the largest absolute residuals of both sides, so one
    outlier does not squeeze the rest into a bin; values outside fall in the end bins.
    """
    spread = float(np.quantile(np.abs(np.concatenate(residuals)), RESIDUAL_RANGE)) or 1.0
    return np.linspace(-spread, spread, bins + 1)


def residual_shares(residuals: np.ndarray, edges: np.ndarray) -> list[float]:
    """Share of the rows whose residual falls in each bin (the end bins open-ended)."""
    which = np.clip(np.searchsorted(edges, residuals, side="right") - 1, 0, len(edges) - 2)
    return list(np.bincount(which, minlength=len(edges) - 1) / len(residuals))


def regression_section(base: RegressionPredictions | None, pr: RegressionPredictions) -> list[str]:
    """Predicted against actual per decile of the actual value, and the residuals' histogram.

    The bins of the actual value are the PR's deciles; BASE's rows fall in the same bins.
    Residual: actual - prediction (positive: the model predicted too low).
    """
    sides = [p for p in (base, pr) if p is not None]
    edges = actual_bins(pr.label)
    bins = len(edges) + 1
    # right-closed bins, as pandas' qcut: a value on an edge belongs to the lower bin
    which = [np.searchsorted(edges, p.label, side="left") for p in sides]
    actual = bin_means(which[-1], pr.label, bins)
    predicted = [bin_means(w, p.predicted, bins) for w, p in zip(which, sides, strict=True)]
    # a bin is drawn where every side has rows (BASE's test rows may be others)
    drawn = [i for i in range(bins) if all(m[i] is not None for m in [actual, *predicted])]
    labels = [plain(actual[i], 3) for i in drawn]  # type: ignore[arg-type]
    lines = [
        f"#### Predictions against actual values (blue: actual, {legend(len(sides))})",
        "",
        f"Mean prediction in each of {bins} bins of the actual value (the PR's test rows in "
        "equal shares); on the blue line the predictions would be right on average.",
        "",
    ]
    lines += category_chart(
        "Mean prediction per bin of the actual value",
        "Mean actual value of the bin",
        labels,
        "Mean prediction",
        [[float(m[i]) for i in drawn] for m in [actual, *predicted]],  # type: ignore[arg-type]
        reference=True,
    )
    residuals = [p.label - p.predicted for p in sides]
    cuts = residual_edges(residuals)
    centres = (cuts[:-1] + cuts[1:]) / 2
    names = [plain(c, 3) for c in centres]
    names[0], names[-1] = f"below {plain(cuts[1], 3)}", f"≥ {plain(cuts[-2], 3)}"
    lines += [
        "",
        f"Share of the test rows per bin of the residual (actual - prediction; {legend(len(sides))}"
        "); narrower and centred on 0 is better.",
        "",
    ]
    lines += category_chart(
        "Residuals",
        "Residual (bin centre)",
        names,
        "Share of rows",
        [residual_shares(r, cuts) for r in residuals],
        span=(float(centres[0]), float(centres[-1])),  # equal-width bins
    )
    return lines


def errors_section(base: Outputs | None, pr: Outputs) -> list[str]:
    """The section that shows the PR's model's errors, as its task has them."""
    predictions = pr.read()
    before: Predictions | None = None if base is None else base.read()
    if isinstance(predictions, MulticlassPredictions):
        other = before if isinstance(before, MulticlassPredictions) else None
        return [*confusion_section(other, predictions), "", *class_section(other, predictions)]
    if isinstance(predictions, RegressionPredictions):
        values = before if isinstance(before, RegressionPredictions) else None
        return regression_section(values, predictions)
    return curves_section(base if base is not None and base.task == "binary" else None, pr)
