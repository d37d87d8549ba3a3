"""Tuning benchmark: ``make tune``'s search, 20 trials on the project's training rows.

The study runs as ``make tune`` runs it (params.yaml's ``tune:`` and ``train:``, the gate's first
metric, the featurize stage's training rows), without MLflow. Every model fit is timed, so the
figures say how much of the search is the fitting itself and how much is everything around it
(Optuna's sampler and pruner, predicting, scoring, slicing the folds). Target: 20 trials in under
2 minutes on 2 cores.

Usage: ``python -m benchmarks.tune [--trials N]`` (``make bench``; ``dvc repro featurize`` first)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.core.features import read_features
from pipelines.core.io import write_json
from pipelines.params import GateParams, TrainParams, TuneParams, load_paths, load_section
from pipelines.schema import load_schema
from pipelines.stages import train
from pipelines.tuning import search

TARGET_SECONDS = 120.0  # for 20 trials
TRIALS = 20


def measure(trials: int = TRIALS, rows: int | None = None) -> dict[str, Any]:
    """Run the study once and time it, and every fit in it.

    Args:
        trials: How many trials.
        rows: Search on the first this many training rows (all of them by default).
    """
    paths = load_paths()
    schema = load_schema(paths.schema_)
    task = schema.target.task
    params = load_section("train", TrainParams)
    tune = load_section("tune", TuneParams).model_copy(update={"trials": trials, "timeout": None})
    metric = search.primary_metric(load_section("gate", GateParams), task)
    x, y, ids = read_features(paths.train)
    if rows is not None:
        x, y, ids = x.iloc[:rows], y[:rows], ids[:rows]
    data = search.Rows.of((x, y, ids), task, classes=len(schema.target.labels), tune=tune)

    fitting = [0.0, 0]
    fit = train.fit

    def timed_fit(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fit(*args, **kwargs)
        finally:
            fitting[0] += time.perf_counter() - started
            fitting[1] += 1

    train.fit = timed_fit  # type: ignore[assignment]  # fold_score fits through the module
    try:
        started = time.perf_counter()
        result = search.run(data, params, tune, metric)
        wall = time.perf_counter() - started
    finally:
        train.fit = fit  # type: ignore[assignment]
    return {
        "trials": len(result.trials),
        "complete": sum(t.state == "complete" for t in result.trials),
        "pruned": sum(t.state == "pruned" for t in result.trials),
        "folds": tune.folds,
        "rows": len(data.y),
        "model": params.model,
        "metric": metric,
        "baseline": result.baseline.score,
        "best": result.best.score,
        "wall_seconds": wall,
        "seconds_per_trial": wall / len(result.trials),
        "fits": fitting[1],
        "fit_seconds": fitting[0],
        "outside_fit_share": 1 - fitting[0] / wall,
        "target_seconds": TARGET_SECONDS * trials / TRIALS,
    }


def report(figures: dict[str, Any]) -> str:
    """The figures as a table, against the target."""
    verdict = "ok" if figures["wall_seconds"] <= figures["target_seconds"] else "MISSED"
    return "\n".join(
        [
            f"| {figures['trials']} trials ({figures['complete']} complete, "
            f"{figures['pruned']} pruned), {figures['folds']} folds, {figures['rows']:,} rows "
            f"| {figures['model']} | {figures['metric']} |",
            "|---|---|---|",
            f"| wall time | {figures['wall_seconds']:.1f} s | target <= "
            f"{figures['target_seconds']:.0f} s: {verdict} |",
            f"| per trial | {figures['seconds_per_trial']:.2f} s | |",
            f"| fitting ({figures['fits']} fits) | {figures['fit_seconds']:.1f} s | "
            f"{1 - figures['outside_fit_share']:.0%} of the wall time |",
            f"| outside the fits | {figures['wall_seconds'] - figures['fit_seconds']:.1f} s | "
            f"{figures['outside_fit_share']:.0%} |",
            f"| {figures['metric']}: current params, best | {figures['baseline']:.4f} "
            f"| {figures['best']:.4f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; the figures also go to a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-tune.json"))
    args = parser.parse_args(argv)
    figures = measure(args.trials)
    print(report(figures))
    write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
