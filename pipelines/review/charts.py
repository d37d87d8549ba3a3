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

from pipelines.core import xychart
from pipelines.core.curves import pr_points, roc_points

GRID = np.linspace(0.0, 1.0, 201)  # x of the ROC and precision-recall charts: steps of 0.005

BASE_COLOUR, PR_COLOUR, REFERENCE_COLOUR = xychart.GREY, xychart.ORANGE, xychart.BLUE


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
    span: tuple[float, float] | None = None,
) -> list[str]:
    """A line chart over named bins, its y-axis spanning the values (``reference``: a first line).

    Values are written with 4 significant digits; the y-axis is padded by 5% of the span, and
    starts at 0 when no value is negative. Names too wide for their slots
    (:func:`xychart.fits`) would print on top of each other: evenly spaced numbers from
    ``span[0]`` to ``span[1]`` then become a numeric axis, which Mermaid ticks itself, and other
    names are numbered 1..n on the axis and listed in a table under the chart.
    """
    values = np.array([v for line in lines for v in line], dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
    bottom = 0.0 if 0 <= low < pad else low - pad
    legend: list[str] = []
    if xychart.fits(categories):
        x_axis = f'"{x_label}" [{xychart.quoted(categories)}]'
    elif span is not None:
        x_axis = f'"{x_label}" {plain(span[0])} --> {plain(span[1])}'
    else:
        numbers = [str(i) for i in range(1, len(categories) + 1)]
        x_axis = f'"{x_label} (numbered: table below)" [{xychart.quoted(numbers)}]'
        legend = ["", *xychart.legend(x_label, categories)]
    return [
        *mermaid(
            title,
            x_axis,
            f'"{y_label}" {plain(bottom)} --> {plain(high + pad)}',
            [[plain(v) for v in line] for line in lines],
            palette(len(lines), reference),
        ),
        *legend,
    ]


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
        xychart.init(colours),
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis {x_axis}",
        f"    y-axis {y_axis}",
        *[f"    line [{', '.join(line)}]" for line in lines],
        "```",
    ]
