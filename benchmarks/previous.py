"""Throughput against an earlier release: this checkout's service beside the one at ``--ref``.

The release at the ref is checked out in a git worktree and built there by its own
``make run`` (its own environment, data and model), then served by its own ``make serve``
beside this checkout's, one worker each, both with their defaults (here: the model's metrics,
the decision counts and the request id on). They are loaded in turn by wrk with single
records, ``--rounds`` runs each at 8 and at 32 clients (``load.in_turn``: a busy spell of a
shared machine hits both), and the medians are compared. Each side is sent the same rows of
this checkout's raw table, with the fields its own ``/docs.json`` asks for.

The default ref, :data:`REF`, is the template's last release before its service counted the
model's metrics: monitoring must not cost more than :data:`TARGET` of that throughput. A
repository whose history lacks the ref (a model made by ``make new-model``) skips the
comparison and says so; ``--ref`` names another release (``make bench-previous REF=v1.2``).

Usage: ``python -m benchmarks.previous [--ref REF] [--rounds N] [--duration S] [--keep DIR]``
(part of ``make bench``)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmarks.load import BenchError, Server, ensure_wrk, in_turn, running, server_env
from benchmarks.serving import BODIES, SEED, Check, servers
from pipelines.core.io import write_json
from pipelines.core.model import load_model
from pipelines.params import RegisterParams, load_paths, load_section
from pipelines.schema import load_schema, read_raw
from pipelines.serving.example import json_value

# The template's release before the model's metrics, decisions and request id were served.
REF = "1757cce"
CLIENTS = (8, 32)
TARGET = 0.95  # this checkout's throughput / the ref's, medians, at each client count
ROUNDS = 9
ROUND_S = 5.0
WARMUP_S = 3.0
BUILT = ".bench-built"  # written in the worktree once its `make run` succeeded, with the commit
# What this checkout's environment must not hand to the ref's make (its own .venv and params)
FOREIGN = (
    *("VIRTUAL_ENV", "PYTHONPATH", "DEPENDENCY_GROUPS", "MLFLOW_TRACKING_URI"),
    *("UV_PROJECT", "UV_PROJECT_ENVIRONMENT", "BENTOML_HOME", "BENTOML_CONFIG_OVERRIDES"),
)
# OpenAPI property types as the schema's feature types (what ``json_value`` writes)
KINDS = {"integer": "integer", "number": "number", "string": "category", "boolean": "integer"}


def commit_of(ref: str) -> str | None:
    """The full commit id ``ref`` names in this repository, or None when it names none."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or None


def neutral_env() -> dict[str, str]:
    """This process's environment without what points at this checkout (venv, paths, stores)."""
    return {k: v for k, v in os.environ.items() if k not in FOREIGN}


def ref_env(folder: Path) -> dict[str, str]:
    """The ref's environment: :func:`neutral_env` with a BentoML store of its own."""
    return neutral_env() | {
        "BENTOML_HOME": str(folder / ".bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }


def uv_command() -> str:
    """The uv this checkout's make uses (first on PATH under make), for the ref's make too.

    Raises:
        BenchError: No uv on PATH (run the benchmark through ``make bench``).
    """
    found = shutil.which("uv")
    if found is None:
        raise BenchError("no uv on PATH: run this benchmark through `make bench`")
    return found


def build(commit: str, folder: Path, uv: str) -> None:
    """Check ``commit`` out in a worktree at ``folder`` and run its own ``make run`` there.

    A folder already built for that commit (its :data:`BUILT` file) is used as it is.

    Raises:
        BenchError: The worktree or the build failed; the message ends with the log's tail.
    """
    stamp = folder / BUILT
    if stamp.is_file() and stamp.read_text().strip() == commit:
        print(f"{commit[:10]}: built already in {folder}", flush=True)
        return
    if not (folder / ".git").exists():
        added = subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit],
            capture_output=True,
            text=True,
            check=False,
        )
        if added.returncode:
            raise BenchError(f"git worktree add {folder} {commit}: {added.stderr.strip()}")
    log = folder / "bench-build.log"
    print(f"{commit[:10]}: make run in {folder} (its environment, data and model)...", flush=True)
    with log.open("wb") as out:
        done = subprocess.run(
            ["make", "--no-print-directory", "run", f"UV={uv}"],
            cwd=folder,
            env=ref_env(folder),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise BenchError(f"make run at {commit[:10]} failed (see {log}): {tail}")
    stamp.write_text(commit + "\n")


@contextmanager
def worktree(commit: str, keep: Path | None) -> Iterator[Path]:
    """The built worktree of ``commit``: ``keep`` (kept afterwards), else a temporary one."""
    if keep is not None:
        build(commit, keep.resolve(), uv_command())
        yield keep.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-previous-")) / "worktree"
    try:
        build(commit, folder, uv_command())
        yield folder
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(folder)], capture_output=True, check=False
        )
        shutil.rmtree(folder.parent, ignore_errors=True)


def record_fields(openapi: Mapping[str, Any], path: str = "/predict") -> dict[str, str]:
    """The fields of one record of ``path``'s request body, each with its kind.

    Read from the service's OpenAPI document (BentoML's ``/docs.json``): the ``records``
    array's item schema, ``$ref`` followed. The kinds are the schema's feature types
    (``integer``, ``number``, ``category``), as :func:`pipelines.serving.example.json_value`
    takes them.

    Raises:
        BenchError: The document has no such request body.
    """

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = openapi["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    try:
        body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        record = resolve(resolve(body["schema"])["properties"]["records"]["items"])
        fields = record["properties"]
    except (KeyError, TypeError) as error:
        raise BenchError(f"no records in the request body of {path}: {error}") from None

    def kind(node: Mapping[str, Any]) -> str:
        types = [resolve(n).get("type") for n in node.get("anyOf", [node])]
        found = [t for t in types if t in KINDS]
        return KINDS[found[0]] if found else "category"

    return {name: kind(node) for name, node in fields.items()}


def bodies_of(rows: pd.DataFrame, fields: Mapping[str, str]) -> list[str]:
    """One single-record ``/predict`` body per row, with these fields (a column per field).

    Raises:
        BenchError: The table lacks a field the service asks for.
    """
    missing = sorted(set(fields) - set(rows.columns))
    if missing:
        raise BenchError(f"the raw table has no column for the fields {missing}")
    columns = {name: rows[name].tolist() for name in fields}
    return [
        json.dumps({"records": [{n: json_value(columns[n][i], k) for n, k in fields.items()}]})
        for i in range(len(rows))
    ]


def previous_server(ours: Server, folder: Path, commit: str, service: str) -> Server:
    """The ref's ``make serve``, one worker, sent ``ours``'s rows until its fields are known."""
    overrides = {"services": {service: {"workers": 1}}}
    return replace(
        ours,
        key="previous",
        title=f"the release at {commit[:10]}",
        command=[
            "make",
            "--no-print-directory",
            "-C",
            str(folder),
            "serve",
            "PORT={port}",
            f"UV={uv_command()}",
        ],
        expected=[],  # its own model: answers are read, not compared
        env=ref_env(folder) | {"BENTOML_CONFIG_OVERRIDES": json.dumps(overrides)},
    )


def service_name(folder: Path, default: str) -> str:
    """The ref's BentoML service name (its ``register.model_name``), else ``default``."""
    params = yaml.safe_load((folder / "params.yaml").read_text()) or {}
    return str((params.get("register") or {}).get("model_name") or default)


def compare(
    ours: Server,
    previous: Server,
    rows: pd.DataFrame,
    workdir: Path,
    *,
    rounds: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """Requests/s of both, loaded in turn at each of :data:`CLIENTS`; with the ref's bodies.

    Each server carries its whole environment (``Server.env``): none of this checkout's
    leaks into the ref's.
    """
    wrk = ensure_wrk()
    print(f"{previous.title}: reading the fields of its /predict...", flush=True)
    with running(previous, workdir / "previous-fields.log", previous.env) as started:
        fields = record_fields(_get_json(started.base + "/docs.json"))
    print(f"  its fields: {', '.join(fields)}", flush=True)
    previous = replace(previous, bodies=bodies_of(rows, fields))
    figures: dict[str, Any] = {}
    for clients in CLIENTS:
        print(f"{clients} clients: {rounds} rounds of {seconds:g} s each, in turn...", flush=True)
        loads = in_turn(
            {"previous": previous, "ours": ours},
            wrk,
            workdir,
            env=neutral_env(),
            clients=clients,
            seconds=seconds,
            warmup=warmup,
            rounds=rounds,
        )
        per_second = {
            key: [round(run["per_second"], 1) for run in runs] for key, runs in loads.items()
        }
        print(f"  ours {per_second['ours']}, previous {per_second['previous']} req/s", flush=True)
        figures[str(clients)] = per_second
    return figures


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (our own server)
        return json.loads(answer.read())


def checks(results: Mapping[str, Any]) -> list[Check]:
    """This checkout's median throughput over the ref's, at each client count."""
    found = []
    for clients in CLIENTS:
        loads = results.get("loads", {}).get(str(clients))
        ratio = None
        if loads:
            ratio = statistics.median(loads["ours"]) / statistics.median(loads["previous"])
        found.append(
            Check(
                f"ours / the release at {results.get('commit', REF)[:10]}, {clients} clients",
                ratio,
                "x",
                f">= {TARGET:g}x",
                None if ratio is None else ratio >= TARGET,
            )
        )
    return found


def report(results: Mapping[str, Any]) -> str:
    """The settings, each round's figures and the verdicts."""
    settings = results["settings"]
    lines = [
        f"{settings['cores']} cores, load average {settings['load_average_before'][0]:.2f} "
        f"before and {settings['load_average_after'][0]:.2f} after; one worker each; "
        f"{settings['rounds']} rounds of {settings['seconds']:g} s in turn, wrk, single records",
    ]
    for clients in CLIENTS:
        loads = results["loads"][str(clients)]
        for key in ("ours", "previous"):
            runs = " ".join(f"{x:.0f}" for x in loads[key])
            median = statistics.median(loads[key])
            lines.append(f"{key:>9} at {clients:>2} clients: median {median:7.1f} req/s ({runs})")
    lines += ["", f"{'ratio':<44}{'value':>10}  {'target':<12}verdict"]
    for check in checks(results):
        value = "n/a" if check.value is None else f"{check.value:.2f}{check.unit}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[check.passed]
        lines.append(f"{check.name:<44}{value:>10}  {check.target:<12}{verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the ref, serve both, load them in turn; print and write the figures.

    Returns:
        0 when measured (or skipped: no such ref here), 1 when it could not be measured.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=REF, help=f"the earlier release (default {REF})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each, in turn")
    parser.add_argument("--duration", type=float, default=ROUND_S, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds of warm-up")
    parser.add_argument("--keep", type=Path, help="build the ref's worktree here and keep it")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-previous.json"))
    args = parser.parse_args(argv)
    commit = commit_of(args.ref)
    if commit is None:
        print(f"skipped: {args.ref} is not a commit of this repository (a new model's history "
              "starts after it); compare with one that is: --ref <tag or commit>")  # fmt: skip
        return 0
    paths = load_paths()
    schema = load_schema(paths.schema_)
    rows = read_raw(paths.raw).sample(BODIES, random_state=SEED).reset_index(drop=True)
    [ours] = [
        s for s in servers(paths, schema, load_model(paths.model), rows, 1) if s.key == "ours"
    ]
    ours = replace(ours, env=server_env(paths, 1))
    results: dict[str, Any] = {
        "ref": args.ref,
        "commit": commit,
        "settings": {
            "rounds": args.rounds,
            "seconds": args.duration,
            "warmup_seconds": args.warmup,
            "cores": os.cpu_count(),
            "load_average_before": list(os.getloadavg()),
        },
    }
    try:
        with worktree(commit, args.keep) as folder, tempfile.TemporaryDirectory() as scratch:
            name = service_name(folder, load_section("register", RegisterParams).model_name)
            previous = previous_server(ours, folder, commit, name)
            results["loads"] = compare(
                ours,
                previous,
                rows,
                Path(scratch),
                rounds=args.rounds,
                seconds=args.duration,
                warmup=args.warmup,
            )
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results["settings"]["load_average_after"] = list(os.getloadavg())
    results["checks"] = [asdict(check) for check in checks(results)]
    print()
    print(report(results))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
