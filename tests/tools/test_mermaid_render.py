"""Every chart kind the reports write, rendered by mermaid-cli in Chromium: no label unreadable.

The charts come from the real chart functions fed with the worst labels a table can have: long
category names of a similar pattern, many bins, value ranges of awkward magnitudes, long feature
names, many trials. A rendering that prints two labels of one axis on top of each other, cuts a
text off at the SVG's edge or hides an axis's labels fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.core.drift import Binning
from pipelines.core.metrics import RegressionPredictions
from pipelines.core.profile import Distribution
from pipelines.monitoring.compare import Drift
from pipelines.monitoring.monitor import chart as drift_chart
from pipelines.review.charts import category_chart, chart
from pipelines.review.sections import regression_section
from pipelines.tuning.report import _chart as tuning_chart
from pipelines.tuning.search import Result, Trial
from tools import mermaid_render

pytestmark = pytest.mark.slow


def long_categories(count: int) -> tuple[str, ...]:
    """Category names as long and alike as a table's: they differ only in their first word."""
    words = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India"]
    return tuple(
        f"{words[i % len(words)]}{i // len(words) or ''} settlement route (scheduled)"
        for i in range(count)
    )


def drift(binning: Binning, name: str) -> Drift:
    """A drifting feature over ``binning``: the served rows piled into the first bins."""
    bins = len(binning.labels)
    reference = np.full(bins, 1 / bins)
    served = np.linspace(2, 0.1, bins)
    served /= served.sum()
    distribution = Distribution(binning, tuple(reference), rows=10_000)
    return Drift(name, distribution, served, 500, 0.9, 0.1, float("nan"), None)


def regression(scale: float) -> RegressionPredictions:
    """Predictions of values around ``scale`` (bin labels of 3 significant digits and a sign)."""
    rng = np.random.default_rng(7)
    label = rng.normal(scale, abs(scale) / 3, 400)
    predicted = label + rng.normal(0, abs(scale) / 5, 400)
    ids = np.arange(400)
    return RegressionPredictions(
        ids, label, predicted, predicted - abs(scale), predicted + abs(scale)
    )


def search(trials: int) -> Result:
    """A finished search of ``trials`` trials, a few of them failed (their numbers are skipped)."""
    rng = np.random.default_rng(3)
    return Result(
        metric="roc_auc",
        better="higher",
        trials=tuple(
            Trial(
                n,
                "failed" if n % 7 == 6 else "complete",
                {"x": n},
                tuple(rng.uniform(0.7, 0.9, 3)),
                1.0,
            )
            for n in range(trials)
        ),
        stopped_by="trials",
    )


def blocks(lines: list[str]) -> list[str]:
    """The Mermaid texts of a report's lines."""
    return mermaid_render.blocks("\n".join(lines) + "\n")


def every_chart() -> dict[str, str]:
    """One chart per kind the reports write, each with its worst labels, by a readable name."""
    name = "a_feature_with_a_rather_long_descriptive_column_name_in_the_table"
    ugly = (0.000123456, 20.1234, 25.0987, 46.3333, 1234.5678, 98765.4321, 1.5e7, 2.25e9)
    threshold = [round(float(t), 4) for t in np.linspace(0.0, 1.0, 21)]
    value = [[float(np.sin(3 * t) * 1e5 - 12345.678) for t in threshold]] * 2
    calibration, residuals = blocks(regression_section(regression(0.00123), regression(0.00123)))
    large, _ = blocks(regression_section(None, regression(-1.23e6)))
    # with markup characters, which Mermaid's sanitizer prints as entities unless replaced
    categories = (*long_categories(5), "Fewer than <5 units & <10 items")
    charts = {
        "drift, categorical": blocks(
            drift_chart(drift(Binning("categorical", categories=categories), name))
        )[0],
        "drift, 30 categories": blocks(
            drift_chart(drift(Binning("categorical", categories=long_categories(30)), "f"))
        )[0],
        "drift, numeric": blocks(drift_chart(drift(Binning("numeric", edges=ugly), name)))[0],
        "ROC": blocks(chart("ROC", "False positive rate", "True positive rate", [[0.5] * 201]))[0],
        "value curve": blocks(
            category_chart(
                "Value per 1,000 rows by threshold (base at 0.35, PR at 0.4)",
                "threshold",
                [f"{t:g}" for t in threshold],
                "value per 1,000 rows",
                value,
                span=(threshold[0], threshold[-1]),
            )
        )[0],
        "calibration, small values": calibration,
        "calibration, large negative values": large,
        "residuals": residuals,
        "tuning, 20 trials": blocks(tuning_chart(search(20), "ROC AUC"))[0],
        "tuning, 150 trials": blocks(tuning_chart(search(150), "ROC AUC"))[0],
    }
    return charts


OLD = "the old vertical bars"


def old_vertical_bars() -> str:
    """The drift chart as it was: long category names under vertical bars."""
    names = ", ".join(f'"{n}"' for n in long_categories(6))
    bars = ", ".join(["0.1"] * 6)
    return f"xychart-beta\n    x-axis [{names}]\n    y-axis 0 --> 1\n    bar [{bars}]\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mermaid_render.Rendered]:
    """Every chart, rendered once by mermaid-cli and measured in Chromium."""
    missing = [] if shutil.which("chromium") else ["chromium (apt-get install chromium)"]
    mmdc = Path(os.environ.get("MMDC") or mermaid_render.MMDC)
    if not mmdc.exists() and shutil.which("npm"):  # installed by the one test that needs it
        subprocess.run(["make", "-s", "mermaid-cli"], cwd=mermaid_render.ROOT, check=True)
    if not mmdc.exists():
        missing.append(f"mermaid-cli at {mmdc} (make mermaid-cli)")
    if missing:
        message = f"not installed: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    charts = {**every_chart(), OLD: old_vertical_bars()}
    drawn = mermaid_render.render(list(charts.values()), tmp_path_factory.mktemp("charts"))
    return dict(zip(charts, drawn, strict=True))


@pytest.mark.parametrize("kind", list(every_chart()))
def test_every_label_of_the_chart_is_readable(
    rendered: dict[str, mermaid_render.Rendered], kind: str
) -> None:
    drawn = rendered[kind]
    assert drawn.axes(), f"{kind}: no axis labels were drawn:\n{drawn.source}"
    assert drawn.problems() == [], drawn.source


def test_the_check_finds_the_old_vertical_bars_unreadable(
    rendered: dict[str, mermaid_render.Rendered],
) -> None:
    """The check itself: long category names on a vertical bar chart overlap, and it says so."""
    problems = rendered[OLD].problems()
    assert any("overlaps" in p for p in problems), problems
