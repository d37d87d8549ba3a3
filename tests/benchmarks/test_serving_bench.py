"""The serving benchmark's pure parts, and its baseline server really serves the model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import serving
from pipelines.core.features import encode
from pipelines.core.model import LoadedModel, load_model, read_threshold
from pipelines.params import load_paths
from pipelines.schema import Schema
from pipelines.serving.batch import columns
from pipelines.serving.example import request_records
from tests.serving.test_batch import save_small_model
from tests.support.columns import ROOT
from tests.support.serving import assert_predictions_match, expected_predictions
from tests.support.training import HALF_WIDTH

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000/predict
  1 threads and 8 connections
  Latency Distribution
     50%    2.10ms
     99%   11.02ms
  21000 requests in 10.00s, 5.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   2100.00
BENCH {"requests": 21000, "duration_us": 10000000, "p50_us": 2100.5, "p99_us": 11020.0, \
"connect": 0, "read": 1, "write": 0, "status": 3, "timeout": 2}
"""


def test_wrk_figures_are_read_from_the_scripts_json_line() -> None:
    load = serving.parse_wrk(WRK_OUTPUT)
    kinds = {"connect": 0, "read": 1, "write": 0, "status": 3, "timeout": 2}
    assert load == serving.Load(
        requests=21000, seconds=10.0, p50_ms=2.1005, p99_ms=11.02, errors=6, error_kinds=kinds
    )
    assert load.per_second == pytest.approx(2100.0)
    assert load.as_dict()["per_second"] == pytest.approx(2100.0)


def test_wrk_output_without_figures_is_an_error_quoting_it() -> None:
    with pytest.raises(serving.BenchError, match=r"unable to connect to 127\.0\.0\.1:1"):
        serving.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_lua_script_holds_every_body_and_refuses_its_own_delimiter() -> None:
    bodies = ['{"records": [{"a": 1}]}', '{"records": [{"a": "]]"}]}']
    script = serving.lua_script(bodies)
    assert all(f"[==[{body}]==]" in script for body in bodies)
    assert 'wrk.method = "POST"' in script
    assert "latency:percentile(99)" in script
    with pytest.raises(ValueError, match="delimiter"):
        serving.lua_script(['{"x": "]==]"}'])
    with pytest.raises(ValueError, match="at least one"):
        serving.lua_script([])


def test_request_bodies_carry_raw_json_types(raw: pd.DataFrame, schema: Schema) -> None:
    with_nulls = raw[raw[list(schema.features)].isna().any(axis=1)]  # none when nothing is nullable
    rows = pd.concat([with_nulls.head(2), raw.head(2)])
    records = request_records(rows, schema)
    assert [list(r) for r in records] == [list(schema.features)] * len(rows)
    kinds = {"integer": int, "number": float, "category": str}
    for record, (_, row) in zip(records, rows.iterrows(), strict=True):
        for name, feature in schema.features.items():
            if pd.isna(row[name]):
                assert record[name] is None, name
            else:
                assert type(record[name]) is kinds[feature.type], name
                assert record[name] == row[name], name
    body = json.loads(serving.service_bodies(records)[0])
    assert body == {"records": [records[0]]}


def _results(ours: float, naive: float, p99: float, batch: float, off: float = 1300.0) -> dict:
    def loads(per_second: float, p99_ms: float) -> dict:
        figures = {"per_second": per_second, "p50_ms": 1.0, "p99_ms": p99_ms, "errors": 0}
        return {str(c): figures for c in serving.CLIENTS}

    return {
        "settings": {
            "cores": 2,
            "load_average_before": [0.5, 0.4, 0.3],
            "load_average_after": [1.5, 0.9, 0.5],
            "workers": 1,
            "load_generator": "wrk, 1 thread",
            "seconds": 10.0,
            "warmup_seconds": 5.0,
        },
        "servers": {
            "ours": loads(ours, p99),
            "naive": loads(naive, 400.0),
            "mlflow": {"error": "mlflow models serve exited: no model"},
        },
        "metrics_cost": {"on": [ours, 1.0, 9e9], "off": [1.0, off, 9e9]},  # medians: ours, off
        "bare": {"per_second": 4000.0, "p50_ms": 0.2, "p99_ms": 0.5},
        "batch": {
            "rows": 100_000,
            "bare_rows_per_s": 300_000.0,
            "encode_predict_rows_per_s": 300_000.0 * batch,
            "end_to_end_rows_per_s": 100_000.0,
            "command_seconds": 4.0,
        },
    }


def test_checks_compute_the_ratios_and_judge_the_targets() -> None:
    checks = {c.name: c for c in serving.checks(_results(1200.0, 40.0, 9.0, 0.9))}
    speedup = checks["ours / naive throughput, 8 clients"]
    assert speedup.value == pytest.approx(30.0)
    assert speedup.passed is True
    assert checks["ours p99 latency, 8 clients"].passed is True
    assert checks["ours / bare model calls, 8 clients"].value == pytest.approx(0.3)
    assert checks["ours / bare model calls, 8 clients"].passed is None  # no target
    assert checks["batch encode+predict / bare model rows/s"].passed is True
    assert checks["ours / mlflow models serve, 8 clients"].value is None
    monitored = checks["ours / ours without model metrics, 8 clients, medians"]
    assert monitored.value == pytest.approx(1200.0 / 1300.0)
    assert monitored.passed is True
    costly = serving.checks(_results(1200.0, 40.0, 9.0, 0.9, off=1400.0))
    assert next(c for c in costly if c.name.startswith("ours / ours")).passed is False

    failing = {c.name: c.passed for c in serving.checks(_results(200.0, 40.0, 30.0, 0.5))}
    assert failing["ours / naive throughput, 8 clients"] is False
    assert failing["ours p99 latency, 8 clients"] is False
    assert failing["batch encode+predict / bare model rows/s"] is False


def test_the_report_prints_figures_ratios_verdicts_and_what_was_not_measured() -> None:
    text = serving.report(_results(1200.0, 40.0, 30.0, 0.9))
    assert text.startswith("2 cores, load average 0.50 before and 1.50 after; 1 worker")
    assert "30.00x  >= 10x" in text
    assert "30.00 ms  <= 25 ms" in text
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("ours / naive")).endswith("PASS")
    assert next(line for line in lines if line.startswith("ours p99")).endswith("FAIL")
    assert "mlflow models serve                       not measured (below)" in text
    assert "not measured:\n  mlflow models serve exited: no model" in text
    assert "raw records in, its outputs out" in text  # what MLflow's server is given
    assert "300,000" in text
    without_ours = _results(1.0, 1.0, 1.0, 1.0)
    del without_ours["servers"]["ours"]
    assert "n/a  >= 10x      n/a" in serving.report(without_ours)


def test_mlflow_bodies_are_the_raw_records_the_service_gets(
    raw: pd.DataFrame, schema: Schema
) -> None:
    records = request_records(raw.head(3), schema)
    bodies = [json.loads(b) for b in serving.mlflow_bodies(records)]
    assert [b["dataframe_records"] for b in bodies] == [[r] for r in records]
    assert [json.loads(b)["records"] for b in serving.service_bodies(records)] == [
        b["dataframe_records"] for b in bodies
    ]


# ---------------------------------------------------------------------------------------------
# The naive server, for real


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    """A working directory with the project's params and schema and a small trained model."""
    directory = tmp_path_factory.mktemp("project")
    for name in ("params.yaml", "schema.yaml"):
        shutil.copy(ROOT / name, directory / name)
    save_small_model(directory / "models" / "model", raw, schema)
    return directory


@pytest.fixture(scope="module")
def model(project: Path) -> LoadedModel:
    return load_model(project / "models" / "model")


@pytest.fixture(scope="module")
def naive(project: Path) -> Iterator[serving.Running]:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.naive_server:create_app"]
    command += ["--factory", "--host", "127.0.0.1", "--port", "{port}"]
    server = serving.Server("naive", "naive", command, "/predict", "/openapi.json", [], [], float)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with serving.running(server, project / "naive.log", env, cwd=project) as started:
        yield started
    host, port = started.base.removeprefix("http://").split(":")
    with socket.socket() as sock:  # stopped: nothing listens on its port any more
        assert sock.connect_ex((host, int(port))) != 0


@pytest.fixture(scope="module")
def naive_url(naive: serving.Running) -> str:
    return naive.base


def test_the_peak_rss_of_each_process_of_the_server_is_read(
    naive: serving.Running, naive_url: str
) -> None:
    peaks = serving.tree_peaks(naive.pid)
    leader = [p for p in peaks if p["pid"] == naive.pid]
    assert len(leader) == 1
    # A Python server with pandas and the model loaded: tens of MiB at least, far from 0.
    assert 30 < leader[0]["peak_mib"] < 4096
    assert leader[0]["role"].startswith("python")
    assert not [p for p in peaks if p["role"] == "worker"]  # uvicorn, not BentoML
    assert serving.tree_peaks(-1) == []
    # This test's own process tree holds the server: found among the descendants.
    assert naive.pid in {p["pid"] for p in serving.tree_peaks(os.getpid())}


def test_peak_rss_comes_from_the_vmhwm_line() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n"
    assert serving.peak_rss_kib(status) == 123456
    with pytest.raises(ValueError, match="VmHWM"):
        serving.peak_rss_kib("Name:\tkthreadd\n")


def test_the_naive_server_answers_the_models_outputs_in_the_services_shape(
    naive_url: str, project: Path, raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    rows = pd.concat([raw.head(20), raw[raw[list(schema.features)].isna().any(axis=1)].head(3)])
    records = request_records(rows, schema)
    x = encode(rows, schema)[model.meta["features"]]
    if schema.target.task == "regression":
        output = model.model.predict(x)
    else:
        output = model.model.predict_proba(x)
        output = output[:, 1] if schema.target.task == "binary" else output
    threshold = read_threshold(project / load_paths(project / "params.yaml").model)
    expected = expected_predictions(output, schema, threshold=threshold, half_width=HALF_WIDTH)

    atol = 1e-6 if schema.target.task == "regression" else 0.0  # a value near 0

    answer = serving._post(naive_url + "/predict", json.dumps({"records": records}))
    assert_predictions_match(answer["predictions"], expected, 1e-6, atol)
    single = serving._post(naive_url + "/predict", serving.service_bodies(records[:1])[0])
    assert_predictions_match(single["predictions"], expected[:1], 1e-6, atol)
    # What the benchmark checks every server by: the model's output on the first record
    ours, mlflow_output = serving.answer_readers(schema)
    first = np.asarray(output, dtype=np.float64).reshape(len(rows), -1)[0]
    np.testing.assert_allclose(ours(single), first, rtol=0, atol=1e-6)
    # MLflow answers the registered model's output: a binary model's probabilities, else the
    # batch scorer's columns as records (pipelines/serving/mlflow_model.py)
    scored = model.predict(encode(rows.head(1), schema))
    mlflow_answer = (
        {"predictions": scored.tolist()}
        if schema.target.task == "binary"
        else {"predictions": pd.DataFrame(columns(scored, schema, model)).to_dict("records")}
    )
    np.testing.assert_allclose(mlflow_output(mlflow_answer), first, rtol=0, atol=1e-6)


WRK = shutil.which("wrk")


# .ci/run installs wrk: in CI (the CI variable set) a missing wrk is a failure, not a skip.
@pytest.mark.skipif(
    WRK is None and not os.environ.get("CI"), reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_loads_the_naive_server_with_the_generated_script(
    naive_url: str, tmp_path: Path, raw: pd.DataFrame, schema: Schema
) -> None:
    assert WRK is not None, "wrk is not installed: .ci/run installs it (apt-get install wrk)"
    script = tmp_path / "load.lua"
    bodies = serving.service_bodies(request_records(raw.head(5), schema))
    script.write_text(serving.lua_script(bodies))
    load = serving.run_wrk(WRK, naive_url + "/predict", script, 2, 1)
    assert load.requests > 0
    assert load.errors == 0


def test_best_seconds_times_every_action_in_turn_and_keeps_one_figure_each() -> None:
    calls: list[str] = []
    figures = serving.best_seconds([lambda: calls.append("a"), lambda: calls.append("b")], 3)
    assert calls == ["a", "b"] * 3
    assert len(figures) == 2
    assert all(seconds >= 0 for seconds in figures)
