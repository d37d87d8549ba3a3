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
    assert figures["binary"]["ratio"] == 1.0
    for task, figure in figures.items():
        assert 0 < figure["model_ms"] < figure["median_ms"], task
        assert figure["median_ms"] <= figure["p99_ms"], task
    table = tasks.report(figures)
    assert table.count("\n") == 4
    assert "| multiclass |" in table
