"""Serving benchmark: the service against the tutorial pattern, MLflow and the bare model.

Each server runs alone on a free port of 127.0.0.1 with the same number of worker processes
(``--workers``; by default one per core, as the service runs), is checked to answer like the
model, warmed up, then loaded by ``wrk`` with single-record requests (rows of the real table)
at 1, 8 and 32 concurrent clients:

- ours: the BentoML service, ``make serve`` (``pipelines/serving/service.py``);
- naive: FastAPI + pydantic + a pandas DataFrame per request (``benchmarks/naive_server.py``);
- mlflow: ``mlflow models serve`` of the registered model, which takes the same raw records
  and answers the same outputs (``pipelines/serving/mlflow_model.py``: the schema check,
  the encoding and the model as the batch scorer runs them), one DataFrame per request;
- bare: ``booster.inplace_predict`` on a prepared float32 row, in-process: the ceiling;
- ours without model metrics (``MODEL_METRICS=off``): the cost of monitoring (feature and score
  bins, refusals, request durations), which must stay under 10%. Both run at once, one worker
  each, and are loaded in turn, ``ROUNDS`` times each; their medians are compared. One pass each,
  minutes apart, with two workers, differs by more than the cost: the kernel hands the
  connections to the workers unevenly, run to run (1,688 then 705 requests/s, same server).

The batch scorer is timed on a 100k-row table sampled from the real one, end to end and as
encode+predict alone, against the bare model on the prepared 100k-row matrix. ``wrk`` (a C load
generator, one thread) leaves the cores to the servers, which a Python client would not.

Each server's processes' peak RSS (``VmHWM``) is read after its load runs, before it stops:
the figures the pod's memory requests and limits are set from (deploy/base/deployment.yaml).

How a server is started, checked, loaded and stopped is ``benchmarks/load.py``'s, which the
other serving benchmarks share; this module holds the servers, the measurements and the table.

Usage: ``python -m benchmarks.serving [--duration S] [--warmup S] [--workers N]
[--servers ours ...]``
(``make bench-serving``)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.load import (
    ROUNDS,
    BenchError,
    Load,
    Server,
    check_answers,
    ensure_wrk,
    in_turn,
    lua_script,
    run_wrk,
    running,
    server_env,
    tree_peaks,
)
from pipelines.core.features import encode
from pipelines.core.io import write_json
from pipelines.core.metrics import PROBABILITY
from pipelines.core.model import BASELINE, LoadedModel, load_model
from pipelines.params import Paths, load_paths
from pipelines.schema import Schema, load_schema, read_raw
from pipelines.serving.batch import outputs, read_table, score_file
from pipelines.serving.example import request_records

CLIENTS = (1, 8, 32)
AT = 8  # clients at which the targets are judged
SPEEDUP_TARGET = 10.0  # ours / naive throughput
METRICS_TARGET = 0.9  # ours / ours without the model's metrics
SHADOW_LATENCY_TARGET = 1.5  # p50 at 1 client with a challenger on every request / without
P99_TARGET_MS = 25.0
BATCH_TARGET = 0.8  # batch encode+predict / bare rows per second
BATCH_ROWS = 100_000
REPEAT = 9  # batch timings: the best of so many, taken in turn (a shared machine is noisy)
BODIES = 200  # distinct request bodies each server is sent, in turn
SEED = 0
MLFLOW_NOTE = "the registered model: raw records in, its outputs out, a DataFrame per request"

# ---------------------------------------------------------------------------------------------
# Request bodies


def service_bodies(records: Sequence[dict[str, Any]]) -> list[str]:
    """Single-record bodies of ``POST /predict`` (ours and naive)."""
    return [json.dumps({"records": [record]}) for record in records]


def mlflow_bodies(records: Sequence[dict[str, Any]]) -> list[str]:
    """Single-record bodies of MLflow's ``POST /invocations``: the same raw records."""
    return [json.dumps({"dataframe_records": [record]}) for record in records]


def measure_server(
    server: Server, wrk: str, workdir: Path, *, env: dict[str, str], seconds: float, warmup: float
) -> dict[str, Any]:
    """Start, check, warm up and load one server at each client count; then stop it.

    Before it stops, the peak RSS of each of its processes (``VmHWM``) is read: what the
    memory requests and limits of deploy/base/deployment.yaml are set from.
    """
    script = workdir / f"{server.key}.lua"
    script.write_text(lua_script(server.bodies))
    print(f"{server.title}: starting...", flush=True)
    with running(server, workdir / f"{server.key}.log", env | server.env) as started:
        base = started.base
        check_answers(server, base)
        print(f"  answers match the model; warming up {warmup:g} s...", flush=True)
        run_wrk(wrk, base + server.path, script, AT, warmup)
        loads: dict[str, Any] = {}
        for clients in CLIENTS:
            load = run_wrk(wrk, base + server.path, script, clients, seconds)
            print(
                f"  {clients:>2} clients: {load.per_second:8.1f} req/s, p50 {load.p50_ms:.2f} ms,"
                f" p99 {load.p99_ms:.2f} ms, {load.errors} errors",
                flush=True,
            )
            loads[str(clients)] = load.as_dict()
        peaks = tree_peaks(started.pid)
    workers = [p["peak_mib"] for p in peaks if p["role"] == "worker"]
    print(
        f"  peak RSS: workers {workers} MiB; all {len(peaks)} processes "
        f"{sum(p['peak_mib'] for p in peaks):.0f} MiB",
        flush=True,
    )
    return {**loads, "peak_rss": peaks}


def metrics_cost(
    ours: Server, wrk: str, workdir: Path, *, env: dict[str, str], seconds: float, warmup: float
) -> dict[str, list[float]]:
    """Requests/s of the service with and without its model metrics, loaded in turn at ``AT``."""
    off = replace(ours, key="ours_off", env={"MODEL_METRICS": "off"})
    print(f"model metrics on and off: {ROUNDS} alternating runs at {AT} clients...", flush=True)
    loads = in_turn(
        {"off": off, "on": ours}, wrk, workdir, env=env, clients=AT, seconds=seconds, warmup=warmup
    )
    figures = {key: [load["per_second"] for load in runs] for key, runs in loads.items()}
    print(f"  on {figures['on']}, off {figures['off']} req/s", flush=True)
    return figures


def shadow_cost(
    ours: Server, wrk: str, workdir: Path, *, env: dict[str, str], seconds: float, warmup: float
) -> dict[str, Any]:
    """The service with and without a challenger scoring every request, loaded in turn.

    The challenger is the model's own baseline (``baseline/``, imported as another model), at
    ``MODEL_SHADOW_RATE=1``: the most a shadow costs. At 1 client the latency the next request
    sees (a worker scores the challenger before it reads the next request), at ``AT`` clients
    the throughput.
    """
    store = [sys.executable, "-m", "pipelines.serving.store", "import"]
    baseline = load_paths().model / BASELINE
    if not (baseline / "meta.json").exists():
        raise BenchError(f"{baseline} does not exist: the model has no baseline to shadow with")
    subprocess.run([*store], env=env, check=True, capture_output=True)
    challenger = subprocess.run(
        [*store, "--model", str(baseline)], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    shadowed = replace(
        ours,
        key="ours_shadow",
        env={
            "MODEL_SHADOW": challenger,
            "MODEL_SHADOW_RATE": "1",
            "MODEL_SHADOW_DIR": str(workdir / "shadow"),
        },
    )
    figures: dict[str, Any] = {}
    for clients in (1, AT):
        print(f"shadow off and on: {ROUNDS} alternating runs at {clients} client(s)...", flush=True)
        figures[str(clients)] = in_turn(
            {"off": ours, "on": shadowed},
            wrk,
            workdir,
            env=env,
            clients=clients,
            seconds=seconds,
            warmup=warmup,
        )
    return figures


# ---------------------------------------------------------------------------------------------
# In-process figures


def best_seconds(actions: Sequence[Callable[[], Any]], repeat: int) -> list[float]:
    """The fastest of ``repeat`` calls of each action, taken in turn.

    In turn, so that a busy spell of a shared machine hits every action alike; the fastest,
    because noise only ever adds time.
    """
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(repeat):
        for action, spent in zip(actions, times, strict=True):
            start = time.perf_counter()
            action()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def bare_calls(model: LoadedModel, row: np.ndarray, seconds: float) -> Load:
    """``booster.inplace_predict`` on one prepared float32 row, called for ``seconds``.

    One thread: a single row cannot be split between threads, and handing it to a pool of them
    costs more than the trees (several times more on a busy machine).
    """
    booster = model.model.get_booster().copy()  # type: ignore[attr-defined]
    booster.set_param({"nthread": 1})
    for _ in range(200):  # warm-up: thread pool, caches
        booster.inplace_predict(row)
    latencies = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        booster.inplace_predict(row)
        after = time.perf_counter()
        latencies.append(after - now)
        now = after
    ms = np.asarray(latencies) * 1e3
    return Load(
        requests=len(latencies),
        seconds=now - start,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
    )


def batch_figures(
    table: pd.DataFrame, schema: Schema, model: LoadedModel, threshold: float, workdir: Path
) -> dict[str, float]:
    """Rows per second of the batch scorer and of the bare model on ``table``.

    Raises:
        BenchError: The scorer's outputs differ from the bare model's.
    """
    source, target = workdir / "batch.csv", workdir / "scores.csv"
    table.to_csv(source, index=False)
    frame = read_table(source)
    matrix = np.ascontiguousarray(
        encode(frame, schema)[model.meta["features"]].to_numpy(np.float32)
    )
    booster = model.model.get_booster()  # type: ignore[attr-defined]
    if not np.allclose(outputs(frame, schema, model), booster.inplace_predict(matrix)):
        raise BenchError("the batch scorer's outputs differ from the bare model's")
    rows = len(frame)
    print(f"batch: {rows:,} rows, bare model, encode+predict, end to end (best of {REPEAT})...")
    bare, core, whole = best_seconds(
        [
            lambda: booster.inplace_predict(matrix),
            lambda: outputs(frame, schema, model),
            lambda: score_file(source, target, schema, model, threshold),
        ],
        REPEAT,
    )
    command = [sys.executable, "-m", "pipelines.serving.batch", str(source), str(target)]
    [cli] = best_seconds([lambda: subprocess.run(command, check=True, capture_output=True)], 1)
    return {
        "rows": rows,
        "bare_rows_per_s": rows / bare,
        "encode_predict_rows_per_s": rows / core,
        "end_to_end_rows_per_s": rows / whole,
        "command_seconds": cli,
    }


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Check:
    """One ratio or figure of the report, with its target when it has one."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None
    note: str = ""


def _at(results: dict[str, Any], key: str, figure: str) -> float | None:
    loads = results["servers"].get(key, {})
    return loads[str(AT)][figure] if str(AT) in loads else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _in_turn_ratio(loads: dict[str, list[dict[str, float]]] | None, figure: str) -> float | None:
    """Median of the "on" runs' figure over the median of the "off" runs'."""
    if not loads:
        return None
    on, off = (statistics.median(load[figure] for load in loads[key]) for key in ("on", "off"))
    return _ratio(on, off)


def checks(results: dict[str, Any]) -> list[Check]:
    """The ratios and targets of a run (a missing figure gives no value and no verdict)."""
    ours = _at(results, "ours", "per_second")
    p99 = _at(results, "ours", "p99_ms")
    speedup = _ratio(ours, _at(results, "naive", "per_second"))
    batch = results.get("batch", {})
    core = _ratio(batch.get("encode_predict_rows_per_s"), batch.get("bare_rows_per_s"))
    whole = _ratio(batch.get("end_to_end_rows_per_s"), batch.get("bare_rows_per_s"))
    bare = results.get("bare", {}).get("per_second")
    cost = results.get("metrics_cost", {})
    monitored = (
        _ratio(statistics.median(cost["on"]), statistics.median(cost["off"])) if cost else None
    )
    shadow = results.get("shadow_cost", {})
    shadow_p50 = _in_turn_ratio(shadow.get("1"), "p50_ms")
    return [
        Check(
            f"ours / naive throughput, {AT} clients",
            speedup,
            "x",
            f">= {SPEEDUP_TARGET:g}x",
            None if speedup is None else speedup >= SPEEDUP_TARGET,
        ),
        Check(
            f"ours p99 latency, {AT} clients",
            p99,
            " ms",
            f"<= {P99_TARGET_MS:g} ms",
            None if p99 is None else p99 <= P99_TARGET_MS,
        ),
        Check(
            f"ours / ours without model metrics, {AT} clients, medians",
            monitored,
            "x",
            f">= {METRICS_TARGET:g}x",
            None if monitored is None else monitored >= METRICS_TARGET,
        ),
        Check(
            "ours with a shadow / without, p50 latency, 1 client, medians",
            shadow_p50,
            "x",
            f"<= {SHADOW_LATENCY_TARGET:g}x",
            None if shadow_p50 is None else shadow_p50 <= SHADOW_LATENCY_TARGET,
        ),
        Check(
            "ours with a shadow / without, p99 latency, 1 client, medians",
            _in_turn_ratio(shadow.get("1"), "p99_ms"),
            "x",
            note="the challenger scores every request (rate 1)",
        ),
        Check(
            f"ours with a shadow / without, throughput, {AT} clients, medians",
            _in_turn_ratio(shadow.get(str(AT)), "per_second"),
            "x",
            note="rate 1; serve.shadow_rate 0.1 costs a tenth",
        ),
        Check(
            f"ours / bare model calls, {AT} clients",
            _ratio(ours, bare),
            "x",
            note="the ceiling: no HTTP, no parsing",
        ),
        Check(
            f"ours / mlflow models serve, {AT} clients",
            _ratio(ours, _at(results, "mlflow", "per_second")),
            "x",
            note=MLFLOW_NOTE,
        ),
        Check(
            "batch encode+predict / bare model rows/s",
            core,
            "x",
            f">= {BATCH_TARGET:g}x",
            None if core is None else core >= BATCH_TARGET,
        ),
        Check(
            "batch end to end / bare model rows/s",
            whole,
            "x",
            note="read, check, encode, predict, write CSV",
        ),
    ]


TITLES = {
    "ours": "ours: BentoML service (make serve)",
    "naive": "naive: FastAPI + pandas per request",
    "mlflow": "mlflow models serve",
}


def report(results: dict[str, Any]) -> str:
    """The table of servers and figures, then the ratios with their verdicts."""
    lines = []
    settings = results.get("settings")
    if settings:
        lines.append(
            f"{settings['cores']} cores, load average {settings['load_average_before'][0]:.2f} "
            f"before and {settings.get('load_average_after', [float('nan')])[0]:.2f} after; "
            f"{settings['workers']} worker process(es) per server; {settings['load_generator']}, "
            f"{settings['seconds']:g} s per row after {settings['warmup_seconds']:g} s of warm-up"
        )
    lines.append(
        f"{'server':<40}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    for key, title in TITLES.items():
        loads = results["servers"].get(key)
        if loads is None or "error" in loads:
            lines.append(f"{title:<40}  not measured" + (" (below)" if loads else ""))
            continue
        for clients in CLIENTS:
            load = loads[str(clients)]
            lines.append(
                f"{title if clients == CLIENTS[0] else '':<40}{clients:>8}"
                f"{load['per_second']:>10.1f}{load['p50_ms']:>9.2f}{load['p99_ms']:>9.2f}"
                f"{load['errors']:>8}"
            )
    cost = results.get("metrics_cost")
    if cost:
        lines.append(
            f"{'ours, 1 worker, model metrics on / off':<40}{AT:>8}  "
            + " ".join(
                f"{on:.0f}/{off:.0f}" for on, off in zip(cost["on"], cost["off"], strict=True)
            )
            + " req/s, in turn"
        )
    bare = results.get("bare")
    if bare:
        lines.append(
            f"{'bare model, in-process calls/s':<40}{'1':>8}{bare['per_second']:>10.1f}"
            f"{bare['p50_ms']:>9.2f}{bare['p99_ms']:>9.2f}{'-':>8}"
        )
    batch = results.get("batch")
    if batch:
        lines += [
            "",
            f"{'batch scoring, ' + format(batch['rows'], ',') + ' rows':<42}{'rows/s':>12}",
            f"  {'bare model, prepared float32 matrix':<40}{batch['bare_rows_per_s']:>12,.0f}",
            f"  {'pipelines.serving.batch: encode+predict':<40}"
            f"{batch['encode_predict_rows_per_s']:>12,.0f}",
            f"  {'pipelines.serving.batch: end to end':<40}"
            f"{batch['end_to_end_rows_per_s']:>12,.0f}",
            f"  {'python -m pipelines.serving.batch (with start-up)':<40}"
            f"{batch['rows'] / batch['command_seconds']:>12,.0f}"
            f"  ({batch['command_seconds']:.2f} s)",
        ]
    lines += ["", f"{'ratio':<44}{'value':>10}  {'target':<12}verdict"]
    for check in checks(results):
        value = "n/a" if check.value is None else f"{check.value:.2f}{check.unit}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a" if check.target else ""}[check.passed]
        note = f"  ({check.note})" if check.note else ""
        lines.append(f"{check.name:<44}{value:>10}  {check.target:<12}{verdict}{note}")
    failed = {k: v["error"] for k, v in results["servers"].items() if "error" in v}
    if failed:
        lines += ["", "not measured:", *(f"  {error}" for error in failed.values())]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Putting it together


Reader = Callable[[dict[str, Any]], list[float]]


def answer_readers(schema: Schema) -> tuple[Reader, Reader]:
    """Read the model's output on the first record out of the service's and MLflow's answers.

    The service's is ``/predict``'s (the naive server answers alike); MLflow's the registered
    model's (a binary model's probabilities, else the batch scorer's columns). Binary: the
    probability; regression: the prediction; multiclass: each class's probability, in the
    schema's class order.
    """
    target = schema.target
    if target.task == "multiclass":
        classes = target.labels
        return (
            lambda d: [float(d["predictions"][0]["probabilities"][str(c)]) for c in classes],
            lambda d: [float(d["predictions"][0][f"{PROBABILITY}{c}"]) for c in classes],
        )
    if target.task == "regression":
        return (
            lambda d: [float(d["predictions"][0]["prediction"])],
            lambda d: [float(d["predictions"][0]["prediction"])],
        )
    return (
        lambda d: [float(d["predictions"][0]["probability"])],
        lambda d: [float(d["predictions"][0])],
    )


def servers(
    paths: Paths, schema: Schema, model: LoadedModel, rows: pd.DataFrame, workers: int
) -> list[Server]:
    """The three HTTP servers, each with its bodies and the answers the model gives."""
    venv_bin = Path(sys.executable).parent
    registry = json.loads(paths.registry.read_text()) if paths.registry.exists() else {}
    expected = model.predict(encode(rows, schema)).reshape(len(rows), -1).tolist()
    bodies = service_bodies(request_records(rows, schema))
    ours, mlflow_output = answer_readers(schema)

    naive = [
        *(str(venv_bin / "python"), "-m", "uvicorn", "benchmarks.naive_server:create_app"),
        *("--factory", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)),
    ]
    mlflow = [
        *(str(venv_bin / "mlflow"), "models", "serve", "-m", registry.get("model_uri", "")),
        *("--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", str(workers)),
    ]
    serve = ["make", "--no-print-directory", "serve", "PORT={port}"]
    return [
        Server("naive", TITLES["naive"], naive, "/predict", "/openapi.json", bodies, expected,
               ours),
        Server("mlflow", TITLES["mlflow"], mlflow, "/invocations", "/ping",
               mlflow_bodies(request_records(rows, schema)), expected, mlflow_output),
        Server("ours", TITLES["ours"], serve, "/predict", "/readyz", bodies, expected, ours),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; the results as a JSON-able document."""
    wrk = ensure_wrk()
    paths = load_paths()
    schema = load_schema(paths.schema_)
    model = load_model(paths.model)
    if model.meta["kind"] != "xgboost":
        raise BenchError("the benchmark's ceiling is an XGBoost booster: set train.model: xgboost")
    threshold = model.threshold
    table = read_raw(paths.raw)
    rows = table.sample(BODIES, random_state=SEED).reset_index(drop=True)
    workers = args.workers
    load = os.getloadavg()
    print(f"load average {load[0]:.2f}, {os.cpu_count()} cores; {workers} worker(s) per server")
    results: dict[str, Any] = {
        "settings": {
            "seconds": args.duration,
            "warmup_seconds": args.warmup,
            "clients": list(CLIENTS),
            "workers": workers,
            "load_generator": "wrk, 1 thread",
            "cores": os.cpu_count(),
            "load_average_before": list(load),
        },
        "servers": {},
    }

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        workdir = Path(scratch)
        big = table.sample(BATCH_ROWS, replace=True, random_state=SEED).reset_index(drop=True)
        results["batch"] = batch_figures(big, schema, model, threshold, workdir)
        print(f"bare model: one prepared row, {args.duration:g} s...", flush=True)
        row = np.ascontiguousarray(
            encode(rows.head(1), schema)[model.meta["features"]].to_numpy(np.float32)
        )
        results["bare"] = bare_calls(model, row, args.duration).as_dict()
        env = server_env(paths, workers)
        for server in servers(paths, schema, model, rows, workers):
            if args.servers and server.key not in args.servers:
                continue
            try:
                results["servers"][server.key] = measure_server(
                    server, wrk, workdir, env=env, seconds=args.duration, warmup=args.warmup
                )
            except BenchError as error:
                print(f"  FAILED: {error}", file=sys.stderr, flush=True)
                results["servers"][server.key] = {"error": str(error)}
            if server.key == "ours" and "error" not in results["servers"]["ours"]:
                one_worker = server_env(paths, 1)
                results["metrics_cost"] = metrics_cost(
                    server, wrk, workdir, env=one_worker, seconds=args.duration, warmup=args.warmup
                )
                results["shadow_cost"] = shadow_cost(
                    server, wrk, workdir, env=one_worker, seconds=args.duration, warmup=args.warmup
                )
    results["settings"]["load_average_after"] = list(os.getloadavg())
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the ratios, write the figures to a JSON file.

    Returns:
        0 when every server was measured, 1 when one could not be.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up per server")
    # By default every server gets as many processes as the service starts (serve.workers:
    # cpu_count). `--workers 1` compares the stacks per core: with several, the kernel may hand
    # the 8 keep-alive connections to the processes unevenly (4+4 to 8+0) from run to run.
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes per server"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=["naive", "mlflow", "ours"],
        help="only these servers (default: all); the batch and bare figures are always taken",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench-serving.json"))
    args = parser.parse_args(argv)
    try:
        results = run(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results["checks"] = [asdict(check) for check in checks(results)]
    print()
    print(report(results))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return 1 if any("error" in loads for loads in results["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
