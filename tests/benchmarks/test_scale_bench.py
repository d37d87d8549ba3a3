"""The scaling benchmark (benchmarks/scale.py): its tables, its measurements and its maths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.scale import (
    GIB,
    NOISE,
    BenchError,
    Result,
    exponent,
    fit_seconds,
    main,
    measure,
    report,
    resample,
    rows_at,
    run_size,
    schema_for,
    stage_commands,
    summary,
)
from pipelines.schema import Schema, read_raw
from tests.support.columns import ROOT

ROWS = (2000, 4000)


@pytest.fixture(scope="module")
def tables(raw: pd.DataFrame, schema: Schema) -> dict[int, pd.DataFrame]:
    return {rows: resample(raw, schema, rows) for rows in ROWS}


def test_resampled_tables_pass_the_schema_with_every_column_and_unique_ids(
    tables: dict[int, pd.DataFrame], raw: pd.DataFrame, schema: Schema, tmp_path: Path
) -> None:
    from pipelines.stages.validate import validate_table

    for rows, table in tables.items():
        table.to_csv(tmp_path / "raw.csv", index=False)
        written = read_raw(tmp_path / "raw.csv")  # as the stages read it
        assert list(written.columns) == list(raw.columns)
        assert len(written) == rows
        assert written[schema.id].is_unique
        report = validate_table(written, schema_for(schema, rows))
        assert report.failures == []
        assert report.success


def test_the_same_seed_gives_the_same_table(raw: pd.DataFrame, schema: Schema) -> None:
    pd.testing.assert_frame_equal(resample(raw, schema, 500), resample(raw, schema, 500))
    assert not resample(raw, schema, 500).equals(resample(raw, schema, 500, seed=1))


def test_noise_changes_numbers_within_their_range_and_keeps_allowed_missing_values(
    raw: pd.DataFrame, schema: Schema, tables: dict[int, pd.DataFrame], monkeypatch
) -> None:
    noisy = tables[ROWS[-1]]
    # The same draw without noise: the rows each noisy value came from
    monkeypatch.setattr("benchmarks.scale.NOISE", 0.0)
    drawn = resample(raw, schema, ROWS[-1])
    visible = 0
    for name, feature in schema.features.items():
        if feature.type == "category":
            assert noisy[name].equals(drawn[name])  # categories as drawn
            continue
        values = noisy[name].dropna()
        low = -np.inf if feature.min is None else feature.min
        high = np.inf if feature.max is None else feature.max
        assert values.between(low, high).all(), name
        if feature.type == "integer":
            assert (values == values.round()).all(), name
        assert noisy[name].isna().mean() <= feature.max_null_fraction, name
        assert set(np.flatnonzero(noisy[name].isna())) <= set(np.flatnonzero(drawn[name].isna()))
        # Noise that rounding cannot swallow must show in most rows
        if feature.type == "number" or NOISE * raw[name].std() >= 1:
            visible += 1
            both = noisy[name].notna() & drawn[name].notna()
            assert (noisy[name][both] != drawn[name][both]).mean() > 0.5, name
    if not visible:
        pytest.skip("no numeric feature varies enough for its noise to show")


def test_cost_exponent_and_memory_extrapolation_on_known_lines() -> None:
    rows = [1_000, 10_000, 100_000]
    assert exponent(rows, [2e-3 * r for r in rows]) == pytest.approx(1.0)
    assert exponent(rows, [5 * r**0.5 for r in rows]) == pytest.approx(0.5)
    assert exponent([1_000], [1.0]) is None
    peaks = [100e6 + 1_000 * r for r in rows]
    assert rows_at(rows, [int(p) for p in peaks]) == pytest.approx((24 * GIB - 100e6) / 1_000)
    assert rows_at(rows, [300_000_000] * 3) is None  # memory not growing: never reaches it


def test_fit_seconds_are_between_the_train_stages_lines() -> None:
    lines = [(0.5, "loading"), (2.0, "training xgboost on 10 rows"), (5.5, "wrote models/")]
    assert fit_seconds(lines) == pytest.approx(3.5)
    assert fit_seconds(lines[:2]) is None


def test_measure_sums_the_memory_of_the_whole_process_tree(tmp_path: Path) -> None:
    # A parent and its child each hold 150 MiB for a second: the peak counts both
    hold = "import time; block = b'x' * (150 << 20); time.sleep(1.5)"
    parent = (
        f"import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', {hold!r}]); "
        f"{hold}; child.wait(); print('done')"
    )
    run = measure([sys.executable, "-c", parent], tmp_path, {})
    assert run.peak_bytes > 300 << 20
    assert [text for _, text in run.lines] == ["done"]
    with pytest.raises(BenchError, match="exited 3") as failed:
        measure([sys.executable, "-c", "print('what went wrong'); exit(3)"], tmp_path, {})
    assert "what went wrong" in str(failed.value)


def test_stage_commands_come_from_dvc_yaml_with_params_filled_in() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    commands = stage_commands(yaml.safe_load((ROOT / "dvc.yaml").read_text()), params)
    assert list(commands) == ["validate", "featurize", "train", "evaluate"]
    for command in commands.values():
        assert command[0] == sys.executable
        assert not any("${" in word for word in command)
    assert params["paths"]["raw"] in commands["validate"]
    with pytest.raises(BenchError, match=r"paths\.raw"):
        stage_commands(yaml.safe_load((ROOT / "dvc.yaml").read_text()), {"paths": {}})


def test_the_stages_run_through_their_command_lines(
    tables: dict[int, pd.DataFrame], schema: Schema, tmp_path: Path
) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    size = str(ROWS[0])
    [result] = run_size(
        size, tables[ROWS[0]], schema, ["local"], workdir=tmp_path, params=params,
        stages=("featurize", "train"),
    )  # fmt: skip
    assert (result.size, result.rows, result.engine) == (size, ROWS[0], "local")
    assert set(result.seconds) == set(result.peak_bytes) == {"featurize", "train"}
    assert all(bytes_ > 0 for bytes_ in result.peak_bytes.values())
    assert result.fit_seconds is not None  # the train stage still prints its lines
    assert 0 < result.fit_seconds < result.seconds["train"]
    model = tmp_path / size / "local" / params["paths"]["model"]
    assert json.loads((model / "meta.json").read_text())["train_rows"] < ROWS[0]


def test_the_report_has_a_row_per_size_and_engine_and_the_auc_gap() -> None:
    def result(rows: int, engine: str, auc: float) -> Result:
        return Result(
            size=str(rows), rows=rows, engine=engine,
            seconds={"validate": 1e-5 * rows, "train": 2e-5 * rows},
            peak_bytes={"validate": 1000 * rows, "train": 2000 * rows},
            load={"validate": 1.0, "train": 1.0}, fit_seconds=1e-5 * rows, roc_auc=auc,
        )  # fmt: skip

    results = [result(r, e, 0.8 + (e == "dask") * 0.01) for r in ROWS for e in ("local", "dask")]
    figures = summary(results)
    assert figures["exponent"]["local"]["total"] == pytest.approx(1.0)
    assert figures["exponent"]["dask"]["fit"] == pytest.approx(1.0)
    assert figures["auc_gap"] == {f"{r} dask": pytest.approx(0.01) for r in ROWS}
    assert figures["rows_at_24_gib"]["local"] == pytest.approx(24 * GIB / 2000)
    assert figures["rows_at_24_gib_by_stage"]["local"]["validate"] == pytest.approx(24 * GIB / 1000)
    text = report(results, figures)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "engine" not in line]
    assert len(rows) == len(results)
    for line, r in zip(rows, results, strict=True):
        assert line.startswith(f"| {r.rows:,} | {r.engine} |")
        assert f"{r.peak / GIB:.2f} (train)" in line
    assert "+0.0100" in text
    assert "rows^1.00" in text


def test_a_size_that_is_not_a_row_count_is_refused(capsys) -> None:
    assert main(["--sizes", "real,lots", "--out", "unused.json"]) == 1
    assert "size 'lots' is not a row count" in capsys.readouterr().err
