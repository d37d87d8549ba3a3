"""Pipeline benchmark: full `dvc repro` wall time, train stage vs a bare fit, no-op repro.

Everything runs in a scratch copy of the project, so the workspace is not touched. The train
stage (its command as ``dvc.lock`` records it) is compared with the smallest program that makes
the same fits on the same matrix with the libraries alone and writes the same model files: the
XGBoost model and its linear baseline (skops, as the stage writes it), each with the out-of-fold
fits that tune its threshold by value (a binary model with ``train.threshold: value``), a
regression's on the rows left after its calibration share (same params, same process start-up
and imports). The ratio is what the stage adds around that work: reading params, schema and
amounts, deciding, checking the baseline's numbers, the metadata.

Usage: ``python -m benchmarks.pipeline [--repeat N]`` (``make bench``)
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError
from pipelines.core.metrics import Task
from pipelines.core.model import xgboost_arguments
from pipelines.params import Paths, TrainParams, load_paths, load_section
from pipelines.schema import load_schema
from tools.scratch import ScratchRepo

TRAIN_RATIO_TARGET = 1.3

BARE_FIT = """
import json, sys
import numpy as np, pandas as pd, skops.io
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor
plan = json.loads(sys.argv[2])
table = pd.read_parquet(sys.argv[1])
y = table.pop("label").to_numpy(); table.pop("id")
rows = round(len(y) * (1 - plan["held_out"]))  # a regression's calibration rows are not fitted
x, y = table.iloc[:rows], y[:rows]
regression = plan["task"] == "regression"
def trees():
    return (XGBRegressor if regression else XGBClassifier)(**plan["xgboost"])
def linear():
    scaled = (SimpleImputer(strategy="median", add_indicator=True), StandardScaler())
    if regression:
        return make_pipeline(*scaled, Ridge(**plan["ridge"]))
    return make_pipeline(*scaled, LogisticRegression(**plan["logistic_regression"]))
fold = np.arange(len(y)) % max(plan["folds"], 1)
for make in (trees, linear):
    model = make().fit(x, y)
    if make is trees:
        model.save_model(sys.argv[3])
    else:  # the baseline as the stage writes it: skops, no pickle
        skops.io.dump(model, sys.argv[3] + ".skops")
    for k in range(plan["folds"]):  # out-of-fold probabilities, to tune the threshold on
        inside = fold != k
        make().fit(x[inside], y[inside]).predict_proba(x[~inside])
"""


def bare_plan(params: TrainParams, task: Task) -> dict[str, Any]:
    """What the bare program fits (its ``plan`` argument), as the train stage would.

    The model's XGBoost arguments and the baseline's; ``folds``: the out-of-fold fits of each
    (a binary model's threshold tuned by value), else 0; ``held_out``: the share of rows a
    regression keeps for its interval's calibration.
    """
    return {
        "task": task,
        "xgboost": xgboost_arguments(params, task),
        "logistic_regression": params.logistic_regression.model_dump()
        | {"random_state": params.seed},
        "ridge": {"alpha": params.ridge.alpha},
        "folds": params.threshold_folds if task == "binary" and params.threshold == "value" else 0,
        "held_out": params.calibration_size if task == "regression" else 0.0,
    }


def timed(action: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    return statistics.median(wall_times(action, repeat))


def wall_times(action: Callable[[], Any], repeat: int) -> list[float]:
    """Wall time of each of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def interleaved(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[list[float], list[float]]:
    """Alternate two commands so that drift in the machine's speed hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        a += wall_times(first, 1)
        b += wall_times(second, 1)
    return a, b


def stage_command(lock: Path, stage: str) -> list[str]:
    """The arguments after ``python`` of ``stage``'s command, as DVC ran it (``dvc.lock``).

    Raises:
        PipelineError: The stage is not in the lock, or its command is not a Python one.
    """
    stages = yaml.safe_load(lock.read_text()).get("stages", {})
    if stage not in stages:
        raise PipelineError(f"{lock}: no stage {stage!r}; run `dvc repro` first")
    program, *arguments = shlex.split(stages[stage]["cmd"])
    if program != "python":
        raise PipelineError(f"{lock}: {stage}'s command does not start with python: {program}")
    return arguments


def measure(repo: ScratchRepo, paths: Paths, params: TrainParams, repeat: int) -> dict[str, float]:
    """Run every measurement in ``repo``; seconds per figure."""
    print("getting the data...", flush=True)
    repo.python("-m", "pipelines.stages.data")
    print("full pipeline (dvc repro, every stage)...", flush=True)
    full = timed(lambda: repo.dvc("repro"), 1)
    print(f"no-op dvc repro x{repeat}...", flush=True)
    noop = timed(lambda: repo.dvc("repro"), repeat)
    print(f"train stage vs bare fit, interleaved x{repeat}...", flush=True)
    plan = json.dumps(bare_plan(params, load_schema(repo.path / paths.schema_).target.task))
    train = stage_command(repo.path / "dvc.lock", "train")
    stage, bare = interleaved(
        lambda: repo.python(*train),
        lambda: repo.python("-c", BARE_FIT, str(paths.train), plan, "bare-model.ubj"),
        repeat,
    )
    dvc_stage = timed(lambda: repo.dvc("repro", "--force", "--single-item", "train"), 1)
    return {
        "full_repro_s": full,
        "noop_repro_s": noop,
        # Noise on a shared machine only ever adds time: the fastest run is the truest.
        "train_stage_s": min(stage),
        "bare_fit_s": min(bare),
        "train_ratio": min(stage) / min(bare),
        "train_stage_median_s": statistics.median(stage),
        "bare_fit_median_s": statistics.median(bare),
        "dvc_repro_train_s": dvc_stage,
    }


def report(figures: dict[str, float]) -> str:
    """The benchmark table."""
    verdict = "meets" if figures["train_ratio"] <= TRAIN_RATIO_TARGET else "MISSES"
    return "\n".join(
        [
            f"{'measure':<50}{'seconds':>10}{'ratio':>10}",
            f"{'full pipeline, dvc repro from scratch':<50}{figures['full_repro_s']:>10.2f}",
            f"{'no-op dvc repro':<50}{figures['noop_repro_s']:>10.2f}",
            f"{'bare program, the same fits (baseline), fastest':<50}"
            f"{figures['bare_fit_s']:>10.2f}{1.0:>10.2f}",
            f"{'train stage (python -m pipelines.stages.train), fastest':<50}"
            f"{figures['train_stage_s']:>10.2f}{figures['train_ratio']:>10.2f}",
            f"{'  medians of the same runs: bare, stage':<50}{figures['bare_fit_median_s']:>10.2f}"
            f"{figures['train_stage_median_s'] / figures['bare_fit_median_s']:>10.2f}"
            f"  (stage {figures['train_stage_median_s']:.2f} s)",
            f"{'dvc repro --force -s train (adds DVC)':<50}{figures['dvc_repro_train_s']:>10.2f}"
            f"{figures['dvc_repro_train_s'] / figures['bare_fit_s']:>10.2f}",
            f"train stage / bare fit = {figures['train_ratio']:.2f}: {verdict} the target "
            f"of at most {TRAIN_RATIO_TARGET}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure in a scratch copy and print the table; figures also go to a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timed figure")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-pipeline.json"))
    args = parser.parse_args(argv)
    paths = load_paths()
    params = load_section("train", TrainParams)
    if params.model != "xgboost":
        print("the benchmark compares XGBoost fits: set train.model: xgboost", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        figures = measure(ScratchRepo.create(Path(scratch)), paths, params, args.repeat)
    print(report(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
