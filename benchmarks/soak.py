"""Soak and worker-kill benchmark: the service under a steady minute, and with a worker killed.

Each measurement starts its own ``make serve`` on a free port of 127.0.0.1 and loads it with
single-record ``/predict`` bodies (rows of the real table), as ``benchmarks/serving.py`` does
(whose servers and checks this module reuses, with the wrk script and server handling of
``benchmarks/load.py``; the processes are read from /proc by ``benchmarks/workers.py``):

1. **Soak**: the service as ``make serve`` runs it (``serve.workers`` processes, the model's
   metrics on) with the request log on for every request (``MODEL_REQUEST_LOG_RATE=1`` into a
   temporary folder), loaded by wrk at ``--clients`` connections for ``--duration`` seconds.
   Every second the resident memory (``VmRSS``) of the arbiter and of each worker is read.
   Targets: no failed request, and memory flat by :data:`FLAT_MIB` / :data:`FLAT_SHARE`.
2. **p99 against metrics off**: the same load on the service with its metrics and request log
   on and on one with both off (``MODEL_METRICS=off``), running at once with one worker each
   and loaded in turn (``load.in_turn``: so that a busy spell of the shared machine hits
   both), medians compared. Target: on / off <= :data:`P99_TARGET`.
3. **Worker kill**: with two workers or more, half way through a wrk run of ``--kill-duration``
   seconds, SIGKILL the worker that holds the most connections. Measured: wrk's failed
   requests, the connections that worker held (the bound: a connection carries one request at
   a time, and the other workers keep accepting on the shared socket), the seconds until the
   arbiter has started a new worker and until that one has loaded the model, then ``/readyz``
   and the answers. Targets: failures within the bound; a new worker serving.
4. **Worker kill, retrying client**: the same with ``--clients`` threads of
   :class:`pipelines.serving.client.PredictClient` (retries on a connection failure) instead of
   wrk. Target: no failed request, every answer the model's.

Usage: ``python -m benchmarks.soak [--duration 60] [--clients 32] [--kill-duration 30]``
(part of ``make bench``)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import (
    BenchError,
    Load,
    Server,
    check_answers,
    ensure_wrk,
    http_status,
    in_turn,
    lua_script,
    run_wrk,
    running,
    server_env,
)
from benchmarks.serving import BODIES, SEED, Check, servers
from benchmarks.workers import kill_and_watch, sampling
from pipelines.core.io import write_json
from pipelines.core.model import load_model
from pipelines.params import load_paths
from pipelines.schema import load_schema, read_raw
from pipelines.serving.client import PredictClient, ServiceError

CLIENTS = 32
DURATION_S = 60.0  # the soak
KILL_S = 30.0  # each worker-kill run; the worker is killed half way
WARMUP_S = 5.0
SAMPLE_S = 1.0  # between two readings of the resident memory
# The p99 comparison: many short runs in turn. On a shared machine a p99 of one run moves
# 3-6x from run to run (56 to 360 ms, same server), so the verdict is on medians of many.
P99_ROUNDS = 9
ROUND_S = 6.0
P99_TARGET = 1.5  # p99 with the model's metrics and request log on / both off
KILL_WORKERS = 2  # at least, for the kill runs: one to kill, one to go on serving
RETRIES = 2  # the retrying client's, as docs/serving.md shows it
READY_TIMEOUT_S = 90.0  # after the kill: the new worker must be serving by then
# The service's switches (pipelines/serving/service.py; importing it would start BentoML here)
LOG_RATE, LOG_DIR = "MODEL_REQUEST_LOG_RATE", "MODEL_REQUEST_LOG_DIR"
# Memory is flat when the trend of the soak's second half, projected over the whole soak, grows
# by no more than the larger of FLAT_MIB and FLAT_SHARE of the start, for every process. The
# first half is left out: one-off growth (allocator arenas, the first metric series and log
# file) is not a leak, and a leak grows at a steady rate to the end. A worker holds ~300 MiB,
# so the bound is ~4 MiB a minute: a leak of ~100 bytes per request at ~700 requests/s a
# worker. Measured, the trends of the arbiter and the workers stay within 0.01 MiB.
FLAT_MIB = 4.0
FLAT_SHARE = 0.01


# ---------------------------------------------------------------------------------------------
# Pure parts: the memory trend


def projected_growth(series: Sequence[float], period_s: float) -> float:
    """The least-squares slope of the series' second half times the whole series' duration.

    Raises:
        ValueError: Fewer than four readings (a trend of one or two points means nothing).
    """
    if len(series) < 4:
        raise ValueError(f"{len(series)} readings: at least 4 are needed for a trend")
    half = np.asarray(series[len(series) // 2 :], dtype=np.float64)
    times = np.arange(len(half)) * period_s
    slope = float(np.polyfit(times, half, 1)[0])
    return slope * (len(series) - 1) * period_s


def flat_limit(start_mib: float) -> float:
    """The growth a process of ``start_mib`` may show over a soak and still count as flat."""
    return max(FLAT_MIB, FLAT_SHARE * start_mib)


def memory_figures(series: Mapping[str, Sequence[float]], period_s: float) -> dict[str, Any]:
    """Start, end, growth, projected growth, its limit and the verdict of each series (MiB)."""
    figures = {}
    for name, values in series.items():
        projected = projected_growth(values, period_s)
        limit = flat_limit(values[0])
        figures[name] = {
            "start_mib": round(values[0], 1),
            "end_mib": round(values[-1], 1),
            "growth_mib": round(values[-1] - values[0], 1),
            "projected_mib": round(projected, 2),
            "limit_mib": round(limit, 2),
            "flat": projected <= limit,
        }
    return figures


def series_of(readings: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """Readings (each a name-to-MiB map) as one series per name read every time."""
    if not readings:
        return {}
    names = [name for name in readings[0] if all(name in reading for reading in readings)]
    return {name: [reading[name] for reading in readings] for name in names}


# ---------------------------------------------------------------------------------------------
# The measurements


def _figures(load: Load) -> dict[str, Any]:
    return {**load.as_dict(), "error_kinds": dict(load.error_kinds)}


def soak(
    ours: Server, wrk: str, workdir: Path, *, env: dict[str, str], clients: int, seconds: float
) -> dict[str, Any]:
    """The soak: metrics and request log on, memory read every second during the load."""
    requests = workdir / "requests"
    server = replace(
        ours,
        key="soak",
        env={"MODEL_METRICS": "on", LOG_RATE: "1", LOG_DIR: str(requests)},
    )
    script = workdir / "soak.lua"
    script.write_text(lua_script(server.bodies))
    print(f"soak: {clients} clients for {seconds:g} s, metrics and request log on...", flush=True)
    with running(server, workdir / "soak.log", env | server.env) as started:
        check_answers(server, started.base)
        run_wrk(wrk, started.base + server.path, script, clients, WARMUP_S)
        with sampling(started.pid, SAMPLE_S) as readings:
            load = run_wrk(wrk, started.base + server.path, script, clients, seconds)
    series = series_of(readings)
    lines = sum(len(f.read_text().splitlines()) for f in requests.glob("*.jsonl"))
    print(
        f"  {load.requests} requests, {load.errors} failed, p50 {load.p50_ms:.2f} ms, "
        f"p99 {load.p99_ms:.2f} ms; {lines} request log lines",
        flush=True,
    )
    return {
        "load": _figures(load),
        "request_log_lines": lines,
        "memory": memory_figures(series, SAMPLE_S) if len(readings) >= 4 else {},
        "series_mib": {name: [round(v, 1) for v in values] for name, values in series.items()},
    }


def p99_in_turn(
    ours: Server, wrk: str, workdir: Path, *, env: dict[str, str], clients: int
) -> dict[str, list[dict[str, float]]]:
    """The soak's load on the service with metrics and request log on and with both off."""
    on = replace(
        ours,
        key="soak_on",
        env={"MODEL_METRICS": "on", LOG_RATE: "1", LOG_DIR: str(workdir / "requests-in-turn")},
    )
    off = replace(ours, key="soak_off", env={"MODEL_METRICS": "off", LOG_RATE: "0"})
    print(
        f"metrics and request log on / off: {P99_ROUNDS} runs each of {ROUND_S:g} s at {clients} "
        "clients, in turn...",
        flush=True,
    )
    loads = in_turn(
        {"off": off, "on": on},
        wrk,
        workdir,
        env=env,
        clients=clients,
        seconds=ROUND_S,
        warmup=WARMUP_S,
        rounds=P99_ROUNDS,
    )
    for key, runs in loads.items():
        print(f"  {key}: p99 {[round(r['p99_ms'], 1) for r in runs]} ms", flush=True)
    return loads


def client_load(
    server: Server, base: str, *, clients: int, seconds: float, retries: int
) -> dict[str, Any]:
    """``clients`` threads, each with its own :class:`PredictClient`, for ``seconds``.

    Each answer is compared with the model's own; a request that still fails after the
    client's retries, or gets an HTTP error, counts as failed, by the exception's name.
    """
    lock = threading.Lock()
    latencies: list[float] = []
    failed: dict[str, int] = {}
    counts = {"wrong": 0, "retried": 0}
    end = time.monotonic() + seconds
    bodies = [body.encode() for body in server.bodies]

    def one(offset: int) -> None:
        mine: list[float] = []
        wrong = 0
        with PredictClient(base, retries=retries) as client:
            i = offset
            while time.monotonic() < end:
                i = (i + 1) % len(bodies)
                sent = time.perf_counter()
                try:
                    answer = server.answer(client.send(server.path, bodies[i]))
                except (OSError, ServiceError, ValueError, KeyError) as error:
                    with lock:
                        name = type(error).__name__
                        failed[name] = failed.get(name, 0) + 1
                    continue
                mine.append(time.perf_counter() - sent)
                wrong += not np.allclose(answer, server.expected[i], rtol=0, atol=1e-5)
        with lock:
            latencies.extend(mine)
            counts["wrong"] += wrong
            counts["retried"] += client.retried

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(n * 7,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = np.asarray(latencies or [0.0]) * 1e3
    load = Load(
        requests=len(latencies),
        seconds=time.perf_counter() - started,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        errors=sum(failed.values()),
        error_kinds=failed,
    )
    return {**_figures(load), **counts}


def kill_worker(
    ours: Server,
    wrk: str,
    workdir: Path,
    *,
    key: str,
    env: dict[str, str],
    clients: int,
    seconds: float,
    retrying: bool,
    watch_s: float,
) -> dict[str, Any]:
    """:func:`kill_and_watch` half way through a load run; what the clients got, and after.

    After: whether the service is ready and answers as the model does. The watch lasts until
    the new worker serves or ``watch_s``, the load run's end notwithstanding.
    """
    server = replace(ours, key=key)
    script = workdir / f"{key}.lua"
    script.write_text(lua_script(server.bodies))
    log = workdir / f"{key}.log"
    with running(server, log, env | server.env) as started:
        base = started.base
        check_answers(server, base)
        run_wrk(wrk, base + server.path, script, clients, WARMUP_S)
        outcome: dict[str, Any] = {}

        def load() -> None:
            try:
                if retrying:
                    outcome["load"] = client_load(
                        server, base, clients=clients, seconds=seconds, retries=RETRIES
                    )
                else:
                    figures = run_wrk(wrk, base + server.path, script, clients, seconds)
                    outcome["load"] = _figures(figures)
            except (BenchError, OSError) as error:
                outcome["error"] = str(error)

        loading = threading.Thread(target=load)
        loading.start()
        try:
            time.sleep(seconds / 2)
            port = int(base.rpartition(":")[2])
            watched = kill_and_watch(started.pid, port, log, watch_s)
        finally:
            loading.join()
        if "error" in outcome:
            raise BenchError(f"{key}: the load failed: {outcome['error']}")
        readyz = http_status(base + "/readyz")
        try:
            check_answers(server, base)
            answers = "match the model's"
        except BenchError as error:
            answers = str(error)
    result = {**outcome, **watched, "readyz_after": readyz, "answers_after": answers}
    respawned, ready = watched["respawned_s"], watched["ready_s"]
    print(
        f"  killed a worker holding {watched['killed_held_connections']} of "
        f"{sum(watched['held_connections'])} connections: {outcome['load']['errors']} failed "
        f"of {outcome['load']['requests']} requests; a new worker "
        + (f"started after {respawned:.1f} s" if respawned is not None else "never started")
        + (f", serving after {ready:.1f} s" if ready is not None else "")
        + f"; /readyz {readyz}; answers {answers}",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------
# The report


def _median_p99(runs: Sequence[Mapping[str, float]]) -> float:
    return statistics.median(run["p99_ms"] for run in runs)


def checks(results: dict[str, Any]) -> list[Check]:
    """The figures and their verdicts (a missing measurement gives no value and no verdict)."""
    found: list[Check] = []
    settings = results.get("settings", {})
    clients = settings.get("clients", CLIENTS)
    run = results.get("soak", {})
    if "load" in run:
        errors = run["load"]["errors"]
        found.append(
            Check(
                f"soak: failed requests, {clients} clients, {settings.get('seconds', 0):g} s",
                errors,
                "",
                "= 0",
                errors == 0,
            )
        )
    memory = run.get("memory", {})
    if memory:
        processes = {k: v for k, v in memory.items() if k != "workers"}
        worst = max(processes, key=lambda k: processes[k]["projected_mib"])
        found.append(
            Check(
                "soak: resident memory, largest projected growth",
                processes[worst]["projected_mib"],
                " MiB",
                f"<= max({FLAT_MIB:g} MiB, {FLAT_SHARE:.0%})",
                all(v["flat"] for v in processes.values()),
                note=f"{worst}; the trend of the second half over the whole soak",
            )
        )
    in_turn_loads = results.get("p99_in_turn", {})
    if "on" in in_turn_loads:
        ratio = _median_p99(in_turn_loads["on"]) / _median_p99(in_turn_loads["off"])
        found.append(
            Check(
                "p99, metrics and request log on / off, medians",
                ratio,
                "x",
                f"<= {P99_TARGET:g}x",
                ratio <= P99_TARGET,
                note=f"1 worker each, {clients} clients, in turn",
            )
        )
    kill = results.get("kill", {})
    if "load" in kill:
        failed, bound = kill["load"]["errors"], kill["killed_held_connections"]
        found.append(
            Check(
                "worker killed: failed requests (wrk)",
                failed,
                "",
                f"<= {bound} (its connections)",
                failed <= bound,
                note=f"of {kill['load']['requests']}",
            )
        )
        serving = kill["ready_s"] is not None and kill["readyz_after"] == 200
        found.append(
            Check(
                "worker killed: seconds until a new worker serves",
                kill["ready_s"],
                " s",
                f"<= {READY_TIMEOUT_S:g} s",
                serving and kill["answers_after"] == "match the model's",
                note="then /readyz 200 and the model's answers",
            )
        )
    retry = results.get("kill_retry", {})
    if "load" in retry:
        failed = retry["load"]["errors"] + retry["load"]["wrong"]
        found.append(
            Check(
                f"worker killed, client retrying {RETRIES}x: failed requests",
                failed,
                "",
                "= 0",
                failed == 0,
                note=f"of {retry['load']['requests']}; {retry['load']['retried']} sent again",
            )
        )
    return found


def _two(value: float) -> str:
    """Two decimals, without the minus of a trend that rounds to zero."""
    return f"{value:.2f}".replace("-0.00", "0.00")


def _value(check: Check) -> str:
    if check.value is None:
        return "n/a"
    if isinstance(check.value, int):  # a count
        return f"{check.value}{check.unit}"
    return f"{_two(check.value)}{check.unit}"


def report(results: dict[str, Any]) -> str:
    """The soak's figures, the memory table, the kill runs, then the verdicts."""
    lines = []
    settings = results.get("settings")
    if settings:
        lines.append(
            f"{settings['cores']} cores, load average {settings['load_average_before'][0]:.2f} "
            f"before and {settings.get('load_average_after', [float('nan')])[0]:.2f} after; "
            f"{settings['clients']} clients; soak {settings['seconds']:g} s, kill runs "
            f"{settings['kill_seconds']:g} s"
        )
    lines.append(
        f"{'run':<36}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'failed':>8}  kinds"
    )
    for key, title in RUNS.items():
        load = results.get(key, {}).get("load")
        if load is None:
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in load.get("error_kinds", {}).items() if n)
        lines.append(
            f"{title:<36}{load['requests']:>9}{load['per_second']:>8.0f}{load['p50_ms']:>8.2f}"
            f"{load['p99_ms']:>8.2f}{load['errors']:>8}  {kinds or '-'}"
        )
    in_turn_loads = results.get("p99_in_turn", {})
    for key in ("on", "off"):
        if key in in_turn_loads:
            p99s = " ".join(f"{run['p99_ms']:.1f}" for run in in_turn_loads[key])
            lines.append(f"{'p99 ms, 1 worker, metrics+log ' + key:<36}{p99s}  (in turn)")
    memory = results.get("soak", {}).get("memory", {})
    if memory:
        lines += [
            "",
            f"{'resident memory, MiB':<24}{'start':>8}{'end':>8}{'growth':>8}{'trend':>8}"
            f"{'limit':>8}  verdict",
        ]
        for name, row in memory.items():
            verdict = "" if name == "workers" else ("flat" if row["flat"] else "GROWS")
            lines.append(
                f"{name:<24}{row['start_mib']:>8.1f}{row['end_mib']:>8.1f}"
                f"{row['growth_mib']:>8.1f}{_two(row['projected_mib']):>8}{row['limit_mib']:>8.2f}"
                f"  {verdict}".rstrip()
            )
    lines += ["", f"{'check':<60}{'value':>10}  {'target':<24}verdict"]
    for check in checks(results):
        verdict = {True: "PASS", False: "FAIL", None: "n/a" if check.target else ""}[check.passed]
        note = f"  ({check.note})" if check.note else ""
        lines.append(f"{check.name:<60}{_value(check):>10}  {check.target:<24}{verdict}{note}")
    failed = {
        key: run["error"]
        for key, run in results.items()
        if isinstance(run, dict) and "error" in run
    }
    if failed:
        lines += ["", "not measured:", *(f"  {key}: {error}" for key, error in failed.items())]
    return "\n".join(lines)


RUNS = {
    "soak": "soak, metrics and request log on",
    "kill": "worker killed, wrk",
    "kill_retry": "worker killed, retrying client",
}


# ---------------------------------------------------------------------------------------------
# Putting it together


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; the results as a JSON-able document."""
    wrk = ensure_wrk()
    paths = load_paths()
    schema = load_schema(paths.schema_)
    model = load_model(paths.model)
    rows = read_raw(paths.raw).sample(BODIES, random_state=SEED).reset_index(drop=True)
    [ours] = [s for s in servers(paths, schema, model, rows, 1) if s.key == "ours"]
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    print(f"load average {load[0]:.2f}, {cores} cores", flush=True)
    results: dict[str, Any] = {
        "settings": {
            "seconds": args.duration,
            "kill_seconds": args.kill_duration,
            "warmup_seconds": WARMUP_S,
            "clients": args.clients,
            "round_seconds": ROUND_S,
            "rounds": P99_ROUNDS,
            "load_generator": "wrk, 1 thread",
            "cores": cores,
            "load_average_before": list(load),
        }
    }
    kill_env = server_env(paths, max(KILL_WORKERS, cores))
    kill = partial(kill_worker, ours, wrk, clients=args.clients, seconds=args.kill_duration)
    steps: dict[str, Callable[[Path], Any]] = {
        "soak": partial(
            soak, ours, wrk, env=server_env(paths, None), clients=args.clients,
            seconds=args.duration,
        ),
        "p99_in_turn": partial(
            p99_in_turn, ours, wrk, env=server_env(paths, 1), clients=args.clients
        ),
        "kill": partial(kill, key="kill", env=kill_env, retrying=False, watch_s=READY_TIMEOUT_S),
        "kill_retry": partial(
            kill, key="kill_retry", env=kill_env, retrying=True, watch_s=READY_TIMEOUT_S
        ),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        for key, step in steps.items():
            if args.only and key not in args.only:
                continue
            if key.startswith("kill"):
                print(f"{RUNS[key]}: {args.clients} clients for {args.kill_duration:g} s...")
            try:
                results[key] = step(Path(scratch))
            except BenchError as error:
                print(f"  FAILED: {error}", file=sys.stderr, flush=True)
                results[key] = {"error": str(error)}
    results["settings"]["load_average_after"] = list(os.getloadavg())
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure, print the figures and verdicts, write them to a JSON file.

    Returns:
        0 when every measurement ran and met its target, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds of soak")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent connections")
    parser.add_argument(
        "--kill-duration", type=float, default=KILL_S, help="seconds of each worker-kill run"
    )
    parser.add_argument(
        "--only", nargs="+", choices=[*RUNS, "p99_in_turn"], help="only these measurements"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench-soak.json"))
    args = parser.parse_args(argv)
    try:
        results = run(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    verdicts = checks(results)
    results["checks"] = [asdict(check) for check in verdicts]
    print()
    print(report(results))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    errors = [key for key, run in results.items() if isinstance(run, dict) and "error" in run]
    return 1 if errors or any(check.passed is False for check in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
