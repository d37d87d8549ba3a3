"""The soak benchmark's pure parts: the flatness rule, the worker killed, the failures counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks import soak
from benchmarks.load import parse_wrk

# ---------------------------------------------------------------------------------------------
# Resident memory: the flatness rule


def noisy(start: float, per_second: float, seconds: int = 60, seed: int = 0) -> list[float]:
    """Readings once a second: a straight line with half a MiB of noise."""
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, seconds)
    return [start + per_second * t + e for t, e in enumerate(noise)]


def test_noisy_but_level_memory_is_flat() -> None:
    figures = soak.memory_figures({"worker 1": noisy(300.0, 0.0)}, 1.0)["worker 1"]
    assert abs(figures["projected_mib"]) < 1.0
    assert figures["limit_mib"] == soak.FLAT_MIB
    assert figures["flat"] is True


def test_a_steady_leak_is_caught_even_when_small() -> None:
    # 0.1 MiB a second: 6 MiB over the minute, ~100 bytes a request at 1,000 requests/s
    figures = soak.memory_figures({"worker 1": noisy(300.0, 0.1)}, 1.0)["worker 1"]
    assert figures["projected_mib"] == pytest.approx(5.9, abs=1.0)
    assert figures["flat"] is False
    assert figures["growth_mib"] == pytest.approx(5.9, abs=1.2)


def test_growth_that_stops_in_the_first_half_is_not_a_leak() -> None:
    warming = [250.0 + min(t, 20) * 2.0 for t in range(60)]  # +40 MiB, then level
    figures = soak.memory_figures({"arbiter": warming}, 1.0)["arbiter"]
    assert figures["growth_mib"] == pytest.approx(40.0)
    assert figures["projected_mib"] == pytest.approx(0.0, abs=1e-6)
    assert figures["flat"] is True


def test_the_limit_is_a_share_of_a_large_process() -> None:
    assert soak.flat_limit(100.0) == soak.FLAT_MIB
    assert soak.flat_limit(1000.0) == pytest.approx(soak.FLAT_SHARE * 1000.0)
    # 8 MiB over the soak: a leak for a 300 MiB worker, within 1% of a 1 GiB one
    leak = noisy(300.0, 8.0 / 59), noisy(1024.0, 8.0 / 59)
    verdicts = soak.memory_figures({"small": leak[0], "large": leak[1]}, 1.0)
    assert (verdicts["small"]["flat"], verdicts["large"]["flat"]) == (False, True)


def test_the_trend_is_projected_over_the_whole_soak_at_its_reading_period() -> None:
    every_two_seconds = [100.0 + 0.5 * t for t in range(10)]  # 0.25 MiB/s over 18 s
    assert soak.projected_growth(every_two_seconds, 2.0) == pytest.approx(0.25 * 18)
    with pytest.raises(ValueError, match="at least 4"):
        soak.projected_growth([1.0, 2.0, 3.0], 1.0)


def test_series_keep_only_the_processes_read_every_time() -> None:
    readings = [
        {"arbiter": 150.0, "worker 7": 290.0, "workers": 290.0},
        {"arbiter": 151.0, "worker 7": 291.0, "worker 9": 50.0, "workers": 341.0},
    ]
    assert soak.series_of(readings) == {
        "arbiter": [150.0, 151.0],
        "worker 7": [290.0, 291.0],
        "workers": [290.0, 341.0],
    }
    assert soak.series_of([]) == {}


# ---------------------------------------------------------------------------------------------
# Failures counted from wrk's figures, targets and the report


def wrk_figures(errors: int, *, read: int = 0, requests: int = 20_000) -> dict[str, Any]:
    load = parse_wrk(
        f'BENCH {{"requests": {requests}, "duration_us": 10000000, "p50_us": 9000.0, '
        f'"p99_us": 40000.0, "connect": 0, "read": {read}, "write": 0, '
        f'"status": {errors - read}, "timeout": 0}}\n'
    )
    return {**load.as_dict(), "error_kinds": load.error_kinds}


def results(
    *,
    soak_errors: int = 0,
    leak: float = 0.0,
    p99_on: float = 30.0,
    killed: int = 16,
    held: int = 16,
    ready: float | None = 7.5,
    retry_failed: int = 0,
    wrong: int = 0,
) -> dict[str, Any]:
    memory = {
        "arbiter": noisy(150.0, 0.0),
        "worker 12": noisy(300.0, leak),
        "worker 13": noisy(300.0, 0.0),
    }
    runs = [{"p99_ms": p} for p in (20.0, 25.0, 100.0)]
    return {
        "settings": {
            "cores": 2,
            "load_average_before": [1.0, 1.0, 1.0],
            "load_average_after": [2.0, 1.5, 1.2],
            "clients": 32,
            "seconds": 60.0,
            "kill_seconds": 30.0,
        },
        "soak": {
            "load": wrk_figures(soak_errors, read=soak_errors),
            "memory": soak.memory_figures(memory, 1.0),
        },
        "p99_in_turn": {"on": [{"p99_ms": p99_on}] * 3, "off": runs},
        "kill": {
            "load": wrk_figures(killed, read=killed),
            "killed_held_connections": held,
            "ready_s": ready,
            "readyz_after": 200,
            "answers_after": "match the model's",
        },
        "kill_retry": {
            "load": {**wrk_figures(retry_failed), "wrong": wrong, "retried": 18},
        },
    }


def test_wrk_counts_each_kind_of_failed_request() -> None:
    load = wrk_figures(5, read=3)
    assert load["errors"] == 5
    assert load["error_kinds"] == {"connect": 0, "read": 3, "write": 0, "status": 2, "timeout": 0}


def test_every_target_passes_on_a_good_run() -> None:
    checks = {check.name: check for check in soak.checks(results())}
    assert all(check.passed in (True, None) for check in checks.values()), checks
    ratio = checks["p99, metrics and request log on / off, medians"]
    assert ratio.value == pytest.approx(30.0 / 25.0)  # medians: the off runs' is 25
    kill = checks["worker killed: failed requests (wrk)"]
    assert (kill.value, kill.target) == (16, "<= 16 (its connections)")


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"soak_errors": 1}, "soak: failed requests"),
        ({"leak": 0.2}, "soak: resident memory"),
        ({"p99_on": 38.0}, "p99, metrics and request log on / off"),
        ({"killed": 17}, "worker killed: failed requests"),
        ({"ready": None}, "worker killed: seconds until a new worker serves"),
        ({"retry_failed": 1}, "worker killed, client retrying 2x: failed requests"),
        ({"wrong": 1}, "worker killed, client retrying 2x: failed requests"),
    ],
)
def test_each_target_fails_on_its_own(bad: dict[str, Any], failing: str) -> None:
    failed = [check.name for check in soak.checks(results(**bad)) if check.passed is False]
    assert len(failed) == 1, failed
    assert failed[0].startswith(failing)


def test_the_report_shows_the_runs_the_memory_and_the_verdicts() -> None:
    text = soak.report(results(leak=0.2))
    lines = text.splitlines()
    assert lines[0].startswith("2 cores, load average 1.00 before and 2.00 after; 32 clients")
    assert next(line for line in lines if line.startswith("worker killed, wrk")).endswith("read 16")
    assert next(line for line in lines if line.startswith("worker 12 ")).endswith("GROWS")
    assert next(line for line in lines if line.startswith("soak: resident")).split()[-1] != "PASS"
    assert "FAIL  (worker 12;" in text
    missing = results()
    missing["kill"] = {"error": "kill: 1 API worker(s): killing one needs two or more"}
    text = soak.report(missing)
    assert "not measured:\n  kill: kill: 1 API worker(s)" in text
    assert "worker killed: failed requests" not in text
