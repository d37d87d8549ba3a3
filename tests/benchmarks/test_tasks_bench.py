"""The task benchmark trains a model per task on the project's table and times each in turn."""

from __future__ import annotations

import pytest

from benchmarks import tasks
from pipelines.schema import Schema


def test_each_task_is_timed_against_binary(schema: Schema, raw) -> None:
    try:
        tasks.targets(raw, schema)
    except SystemExit as error:
        pytest.skip(f"the schema has no columns for the other tasks: {error}")
    figures = tasks.measure(records=20)
    assert set(figures) == {"binary", "multiclass", "regression"}
    assert figures["binary"]["ratio"] == figures["binary"]["own_ratio"] == 1.0
    for task, figure in figures.items():
        assert 0 < figure["model_ms"] < figure["median_ms"], task
        assert figure["median_ms"] <= figure["p99_ms"], task
        assert figure["own_ms"] == pytest.approx(figure["median_ms"] - figure["model_ms"]), task
    table = tasks.report(figures)
    assert table.count("\n") == 4
    assert "| multiclass |" in table


def test_the_verdict_is_on_the_services_part_not_the_trees() -> None:
    def figure(median: float, trees: float, binary_own: float = 0.025) -> dict[str, float]:
        own = median - trees
        return {"median_ms": median, "p99_ms": 2 * median, "model_ms": trees, "own_ms": own,
                "ratio": median / 0.05, "own_ratio": own / binary_own}  # fmt: skip

    many_trees = {"binary": figure(0.05, 0.025), "multiclass": figure(0.1, 0.074)}
    assert "MISSED" not in tasks.report(many_trees)  # 2x the request, 1.04x the service's
    slow_path = many_trees | {"multiclass": figure(0.1, 0.06)}  # the service's 1.6x binary's
    assert tasks.report(slow_path).splitlines()[-1].endswith("| MISSED |")
