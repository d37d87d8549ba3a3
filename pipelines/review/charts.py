"""Mermaid ``xychart-beta`` charts for the pull-request comment, which GitHub draws inline.

A Mermaid line chart places its points evenly along the x-axis, so a curve whose vertices lie at
any x (a ROC curve of a model with few distinct scores has a handful) is drawn as the polyline
through its vertices, evaluated at :data:`GRID`'s evenly spaced x. A vertex between two grid
points is then off by at most half a step: the drawn curve keeps its shape and its area (a ROC
curve's AUC) within a few thousandths, however many vertices the curve has, and the chart's size
is the grid's, not the test set's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipelines.core.curves import pr_points, roc_points

GRID = np.linspace(0.0, 1.0, 201)  # x of the ROC and precision-recall charts: steps of 0.005

BASE_COLOUR, PR_COLOUR, REFERENCE_COLOUR = "#9e9e9e", "#e8590c", "#1c7ed6"


def through_vertices(x: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """The polyline through the vertices ``(x, y)``, evaluated at each x of ``grid``.

    The vertices are taken in order of x (ties keep their order: a vertical step). At an x
    where the curve steps vertically, the value is the step's last (its right-hand limit);
    outside the vertices' range, the nearest end's value.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    right = np.clip(np.searchsorted(xs, grid, side="right"), 1, len(xs) - 1)
    left = right - 1
    span = xs[right] - xs[left]
    share = np.where(span > 0, (grid - xs[left]) / np.where(span > 0, span, 1.0), 1.0)
    values = ys[left] + np.clip(share, 0.0, 1.0) * (ys[right] - ys[left])
    values = np.where(grid < xs[0], ys[0], values)
    return np.where(grid >= xs[-1], ys[-1], values)


def curve(predictions: pd.DataFrame, kind: str) -> list[float]:
    """A binary model's ROC (``"roc"``) or precision-recall (``"pr"``) curve on :data:`GRID`.

    Drawn through the curve's own vertices (:func:`through_vertices`), as DVC's plots draw
    ``roc.json`` and ``precision_recall.json``.
    """
    y = predictions["label"].to_numpy()
    p = predictions["probability"].to_numpy(dtype=np.float64)
    if kind == "roc":
        points, x_key, y_key = roc_points(y, p), "fpr", "tpr"
    else:
        points, x_key, y_key = pr_points(y, p), "recall", "precision"
    x = np.array([pt[x_key] for pt in points])
    values = np.array([pt[y_key] for pt in points])
    return [round(float(v), 3) for v in through_vertices(x, values)]


def palette(count: int, reference: bool = False) -> str:
    """Line colours: an optional reference line (blue), then grey for BASE and orange for the PR."""
    colours = [BASE_COLOUR, PR_COLOUR] if count - reference == 2 else [PR_COLOUR]
    return ", ".join([REFERENCE_COLOUR, *colours] if reference else colours)


def chart(title: str, x_label: str, y_label: str, lines: list[list[float]]) -> list[str]:
    """A line chart on the unit square over :data:`GRID` (grey: base, orange: PR)."""
    return mermaid(
        title,
        f'"{x_label}" 0 --> 1',
        f'"{y_label}" 0 --> 1',
        [[f"{v:.3f}" for v in line] for line in lines],
        palette(len(lines)),
    )


def category_chart(
    title: str,
    x_label: str,
    categories: Sequence[str],
    y_label: str,
    lines: list[list[float]],
    *,
    reference: bool = False,
) -> list[str]:
    """A line chart over named bins, its y-axis spanning the values (``reference``: a first line).

    Values are written with 4 significant digits; the y-axis is padded by 5% of the span, and
    starts at 0 when no value is negative.
    """
    values = np.array([v for line in lines for v in line], dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
    bottom = 0.0 if 0 <= low < pad else low - pad
    names = ", ".join(f'"{c}"' for c in categories)
    return mermaid(
        title,
        f'"{x_label}" [{names}]',
        f'"{y_label}" {plain(bottom)} --> {plain(high + pad)}',
        [[plain(v) for v in line] for line in lines],
        palette(len(lines), reference),
    )


def plain(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and no exponent (Mermaid reads no ``1e+04``)."""
    return np.format_float_positional(
        float(value), precision=digits, unique=False, fractional=False, trim="-"
    )


def mermaid(
    title: str, x_axis: str, y_axis: str, lines: list[list[str]], colours: str
) -> list[str]:
    """The Markdown lines of a Mermaid ``xychart-beta`` with the given axes and lines."""
    return [
        "```mermaid",
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + colours + '"}}}}%%',
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis {x_axis}",
        f"    y-axis {y_axis}",
        *[f"    line [{', '.join(line)}]" for line in lines],
        "```",
    ]
