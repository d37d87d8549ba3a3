"""The tuning benchmark runs the search and times its fits, on a small project of the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks import tune
from pipelines.schema import Schema, dump_schema
from tests.support.tuning import tune_project


def test_the_search_is_timed_with_its_fits(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    tune_project(tmp_path, raw, dump_schema(schema), monkeypatch)
    figures = tune.measure(trials=3)

    assert figures["trials"] == 3
    assert figures["complete"] + figures["pruned"] == 3
    assert figures["fits"] >= figures["folds"] * figures["complete"]
    assert 0 < figures["fit_seconds"] < figures["wall_seconds"]
    assert 0 < figures["outside_fit_share"] < 1
    assert figures["target_seconds"] == pytest.approx(tune.TARGET_SECONDS * 3 / tune.TRIALS)
    table = tune.report(figures)
    assert table.count("\n") == 6
    assert "| wall time |" in table
