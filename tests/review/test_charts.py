"""The comment's charts: curves drawn through their own vertices, whatever their number."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from pipelines.review.charts import GRID, category_chart, chart, curve, plain, through_vertices
from pipelines.review.render import MAX_CHARS
from pipelines.review.sections import curves_section
from tests.review.test_report import outputs

AREA_TOLERANCE = 0.002  # a vertex between two grid points moves by at most half a step (0.0025)


def scored(rows: int, seed: int, scores: tuple[float, ...] | None = None) -> pd.DataFrame:
    """Labels and scores with some signal; ``scores``: only these distinct values."""
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.3).astype(int)
    if scores is None:
        probability = 1 / (1 + np.exp(-(2 * label + rng.normal(size=rows) - 1)))
    else:
        low, high = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.3, 0.5])
        probability = np.where(
            label == 1, rng.choice(scores, rows, p=high), rng.choice(scores, rows, p=low)
        )
    return pd.DataFrame({"label": label, "probability": probability})


def drawn_area(values: list[float]) -> float:
    """The area under the line the chart draws: trapezoids through its points on GRID."""
    return float(np.trapezoid(values, GRID))


@pytest.mark.parametrize("rows", [40, 300, 5000])
def test_a_model_with_three_distinct_scores_is_drawn_with_its_true_auc(rows: int) -> None:
    """Sampling "the best rate at or below x" on a grid drew a stair far under this curve."""
    frame = scored(rows, seed=rows, scores=(0.2, 0.5, 0.9))
    truth = roc_auc_score(frame["label"], frame["probability"])
    fpr, tpr, _ = roc_curve(frame["label"], frame["probability"])
    stair = [tpr[fpr <= x].max() for x in GRID]  # what the comment drew before
    assert abs(drawn_area(stair) - truth) > 0.05  # the old drawing fails this test
    assert drawn_area(curve(frame, "roc")) == pytest.approx(truth, abs=AREA_TOLERANCE)


def test_a_curve_of_thousands_of_vertices_keeps_its_area_and_the_chart_its_size() -> None:
    frame = scored(50_000, seed=1)
    assert len(roc_curve(frame["label"], frame["probability"])[0]) > 1000
    roc = curve(frame, "roc")
    assert len(roc) == len(GRID)
    truth = roc_auc_score(frame["label"], frame["probability"])
    assert drawn_area(roc) == pytest.approx(truth, abs=AREA_TOLERANCE)
    text = "\n".join(chart("ROC", "x", "y", [roc, roc]))
    assert len(text) < MAX_CHARS / 10


def test_the_line_passes_through_each_vertex_and_straight_between() -> None:
    x = np.array([0.0, 0.0, 0.25, 0.6, 1.0])  # a vertical step at 0, vertices on and off grid
    y = np.array([0.0, 0.4, 0.7, 0.8, 1.0])
    values = through_vertices(x, y)
    at = {round(float(g), 3): v for g, v in zip(GRID, values, strict=True)}
    assert at[0.0] == 0.4  # the step's top: the line leaves the vertex where the curve does
    assert at[0.25] == pytest.approx(0.7)
    assert at[0.6] == pytest.approx(0.8)
    assert at[1.0] == 1.0
    assert at[0.125] == pytest.approx(0.55)  # halfway between two vertices: halfway up
    assert at[0.8] == pytest.approx(0.9)


def test_the_precision_recall_curve_ends_at_the_base_rate_and_at_one() -> None:
    frame = scored(400, seed=3, scores=(0.2, 0.5, 0.9))
    precision = curve(frame, "pr")
    assert precision[-1] == pytest.approx(frame["label"].mean(), abs=1e-3)
    assert precision[0] == 1.0


def test_the_binary_curves_section_has_two_charts_of_base_and_pr(tmp_path) -> None:  # type: ignore[no-untyped-def]
    section = "\n".join(curves_section(outputs(1.5, tmp_path), outputs(0.3, tmp_path)))
    charts = re.findall(r"```mermaid\n(.*?)```", section, flags=re.DOTALL)
    assert [re.search(r'title "(.*)"', c).group(1) for c in charts] == [  # type: ignore[union-attr]
        "ROC",
        "Precision-recall",
    ]
    for text in charts:
        assert [len(line.split(", ")) for line in re.findall(r"line \[(.*)\]", text)] == [
            len(GRID)
        ] * 2


def test_category_charts_write_plain_numbers_mermaid_can_read() -> None:
    lines = category_chart("t", "x", ["a", "b"], "y", [[12345.678, 0.000012345]])
    assert "    line [12350, 0.00001234]" in lines
    assert not any("e+" in line or "e-" in line for line in lines)
    assert plain(-0.5) == "-0.5"
