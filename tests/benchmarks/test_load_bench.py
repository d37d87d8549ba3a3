"""The load generator and the server handling: wrk's script and figures, a server's processes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.load import (
    BenchError,
    Load,
    Running,
    lua_script,
    parse_wrk,
    peak_rss_kib,
    run_wrk,
    tree_peaks,
)
from benchmarks.serving import service_bodies
from pipelines.schema import Schema
from pipelines.serving.example import request_records

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
    load = parse_wrk(WRK_OUTPUT)
    kinds = {"connect": 0, "read": 1, "write": 0, "status": 3, "timeout": 2}
    assert load == Load(
        requests=21000, seconds=10.0, p50_ms=2.1005, p99_ms=11.02, errors=6, error_kinds=kinds
    )
    assert load.per_second == pytest.approx(2100.0)
    assert load.as_dict()["per_second"] == pytest.approx(2100.0)


def test_wrk_output_without_figures_is_an_error_quoting_it() -> None:
    with pytest.raises(BenchError, match=r"unable to connect to 127\.0\.0\.1:1"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_lua_script_holds_every_body_and_refuses_its_own_delimiter() -> None:
    bodies = ['{"records": [{"a": 1}]}', '{"records": [{"a": "]]"}]}']
    script = lua_script(bodies)
    assert all(f"[==[{body}]==]" in script for body in bodies)
    assert 'wrk.method = "POST"' in script
    assert "latency:percentile(99)" in script
    with pytest.raises(ValueError, match="delimiter"):
        lua_script(['{"x": "]==]"}'])
    with pytest.raises(ValueError, match="at least one"):
        lua_script([])


# ---------------------------------------------------------------------------------------------
# A real server: the naive one (tests/benchmarks/conftest.py starts and stops it)


def test_the_peak_rss_of_each_process_of_the_server_is_read(naive: Running, naive_url: str) -> None:
    peaks = tree_peaks(naive.pid)
    leader = [p for p in peaks if p["pid"] == naive.pid]
    assert len(leader) == 1
    # A Python server with pandas and the model loaded: tens of MiB at least, far from 0.
    assert 30 < leader[0]["peak_mib"] < 4096
    assert leader[0]["role"].startswith("python")
    assert not [p for p in peaks if p["role"] == "worker"]  # uvicorn, not BentoML
    assert tree_peaks(-1) == []
    # This test's own process tree holds the server: found among the descendants.
    assert naive.pid in {p["pid"] for p in tree_peaks(os.getpid())}


def test_peak_rss_comes_from_the_vmhwm_line() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n"
    assert peak_rss_kib(status) == 123456
    with pytest.raises(ValueError, match="VmHWM"):
        peak_rss_kib("Name:\tkthreadd\n")


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
    bodies = service_bodies(request_records(raw.head(5), schema))
    script.write_text(lua_script(bodies))
    load = run_wrk(WRK, naive_url + "/predict", script, 2, 1)
    assert load.requests > 0
    assert load.errors == 0
