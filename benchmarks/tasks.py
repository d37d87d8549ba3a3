"""Task benchmark: one record through the service's request path, per task, against binary's.

The same table (the project's raw table) and the same params train three models that differ
only in their target: the schema's own for its task (binary in the example), and for the others
the first complete feature that fits (a category of two values, of 3 to 10 values, a number).
Each is timed on what a ``/predict`` of one record costs the service in its process: validating the
body with the strict request model, encoding, scoring (treelite or XGBoost), building and
serialising the response. The models are timed in turn, record after record, so a busy machine
slows them alike. Beside each task's median is the time of the model's own output (the trees) on
the same encoded record: a multiclass XGBoost model holds a tree per class and round, so its
trees alone take about that many times binary's, whatever the service does. What is judged is the
rest, the service's own part of a request (the median less the trees'): each task's within 1.2x
of binary's. The whole request's ratio is printed too.

Usage: ``python -m benchmarks.tasks [--records N]`` (``make bench``)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import features
from pipelines.core.io import write_json
from pipelines.core.model import predict, save_model
from pipelines.params import FeaturizeParams, ServeParams, TrainParams, load_paths, load_section
from pipelines.schema import Schema, dump_schema, infer_schema, load_schema, read_raw
from pipelines.serving.api import request_model
from pipelines.serving.scoring import SCHEMA_FILE, ServedModel, load_served
from pipelines.stages.train import fit, interval

RATIO_TARGET = 1.2  # each task's service part of a single-record request / binary's


def targets(raw: pd.DataFrame, schema: Schema) -> dict[str, tuple[str, str | None]]:
    """Per task, a target column of the table and a binary target's positive class.

    The schema's own target for its task; for the others the first complete feature that fits.

    Raises:
        SystemExit: The table has no complete column for a task ("the schema has no ...").
    """
    complete = [n for n in schema.features if raw[n].notna().all()]
    kinds = {n: schema.features[n] for n in complete}
    two = [n for n, f in kinds.items() if f.type == "category" and len(f.categories or ()) == 2]
    multi = [
        n for n, f in kinds.items() if f.type == "category" and 3 <= len(f.categories or ()) <= 10
    ]
    numbers = [n for n, f in kinds.items() if f.type == "number"]
    chosen: dict[str, tuple[str, str | None]] = {}
    for task, columns in (("binary", two), ("multiclass", multi), ("regression", numbers)):
        if schema.target.task == task:
            positive = schema.target.positive
            chosen[task] = (schema.target.column, None if positive is None else str(positive))
        elif columns:
            categories = schema.features[columns[0]].categories or ()
            chosen[task] = (columns[0], str(categories[-1]) if task == "binary" else None)
        else:
            raise SystemExit(f"the schema has no complete column to make a {task} target of")
    return chosen


def served_model(
    folder: Path, raw: pd.DataFrame, schema: Schema, target: str, positive: str | None
) -> ServedModel:
    """Train on the table with ``target`` as the label and load it as the service does."""
    frame = raw.drop(columns=[schema.target.column]) if target != schema.target.column else raw
    task_schema = infer_schema(frame, target, schema.id, positive)
    split = load_section("featurize", FeaturizeParams)
    params = load_section("train", TrainParams)
    train_rows, test_rows = features.split(frame, task_schema, split.test_size, split.seed)
    x = features.encode(train_rows, task_schema)
    task = task_schema.target.task
    model = fit(x, features.labels(train_rows, task_schema), params, task)
    meta: dict[str, Any] = {
        "features": list(x.columns),
        "target": task_schema.target.model_dump(mode="json", exclude_defaults=True),
    }
    if task == "regression":
        x_test = features.encode(test_rows, task_schema)
        output = predict(model, x_test, task)
        coverage = load_section("serve", ServeParams).coverage
        meta["interval"] = interval(features.labels(test_rows, task_schema), output, coverage)
    save_model(model, params.model, meta, folder)
    (folder / SCHEMA_FILE).write_text(dump_schema(task_schema))
    info = {"name": "bench", "threshold": 0.5}
    return load_served(folder, info, f"bench-{task}:1")


def one_request(served: ServedModel, request: Any, body: bytes) -> float:
    """Seconds the service's in-process path takes for one request body."""
    started = time.perf_counter()
    records = [record.model_dump() for record in request.model_validate_json(body).records]
    served.predict(records).model_dump_json()
    return time.perf_counter() - started


def measure(records: int) -> dict[str, dict[str, float]]:
    """Median single-record seconds per task, timed in turn."""
    paths = load_paths()
    schema = load_schema(paths.schema_)
    raw = read_raw(paths.raw)
    rows = raw.sample(records, replace=True, random_state=0)
    served: dict[str, ServedModel] = {}
    requests: dict[str, Any] = {}
    bodies: dict[str, list[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as scratch:
        for task, (target, positive) in targets(raw, schema).items():
            print(f"training the {task} model (target {target!r})...", flush=True)
            model = served_model(Path(scratch) / task, raw, schema, target, positive)
            requests[task] = request_model(model.schema, 1)
            served[task] = model
            columns = list(model.schema.features)
            bodies[task] = [
                f'{{"records": [{record}]}}'.encode()
                for record in rows[columns].to_json(orient="records", lines=True).splitlines()
            ]
    times: dict[str, list[float]] = {task: [] for task in served}
    trees: dict[str, list[float]] = {task: [] for task in served}
    print(f"{records:,} single-record requests per task, in turn...", flush=True)
    for i in range(records):
        for task, model in served.items():
            times[task].append(one_request(model, requests[task], bodies[task][i]))
            record = requests[task].model_validate_json(bodies[task][i]).records[0]
            x = model.encoder.encode([record.model_dump()])
            started = time.perf_counter()
            model.scorer.output(x)
            trees[task].append(time.perf_counter() - started)

    def own(task: str) -> float:  # the service's part: the request less the model's output
        return statistics.median(times[task]) - statistics.median(trees[task])

    return {
        task: {
            "median_ms": statistics.median(values) * 1e3,
            "p99_ms": float(np.quantile(values, 0.99)) * 1e3,
            "model_ms": statistics.median(trees[task]) * 1e3,
            "own_ms": own(task) * 1e3,
            "ratio": statistics.median(values) / statistics.median(times["binary"]),
            "own_ratio": own(task) / own("binary"),
        }
        for task, values in times.items()
    }


def report(figures: dict[str, dict[str, float]]) -> str:
    """The figures as a table, each task against the target."""
    lines = [
        "| task | median (ms) | p99 (ms) | of which the trees (ms) | the service's (ms) "
        f"| / binary: request, service's | service's <= {RATIO_TARGET:g}x |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, f in figures.items():
        verdict = "ok" if f["own_ratio"] <= RATIO_TARGET else "MISSED"
        lines.append(
            f"| {task} | {f['median_ms']:.3f} | {f['p99_ms']:.3f} | {f['model_ms']:.3f} "
            f"| {f['own_ms']:.3f} | {f['ratio']:.2f}x, {f['own_ratio']:.2f}x | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; the figures also go to a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="requests per task")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-tasks.json"))
    args = parser.parse_args(argv)
    figures = measure(args.records)
    print(report(figures))
    write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
