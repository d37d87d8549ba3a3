"""Pipeline benchmark: full `dvc repro` wall time, train stage vs a bare fit, no-op repro.

Everything runs in a scratch copy of the project, so the workspace is not touched. The train
stage is compared with the smallest program that fits the same XGBoost model on the same
matrix (same params, same process start-up and imports), so the ratio is the stage's overhead.

Usage: ``python -m benchmarks.pipeline [--repeat N]`` (``make bench``)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.core.model import xgboost_arguments
from pipelines.params import Paths, TrainParams, load_paths, load_section
from tools.scratch import ScratchRepo

TRAIN_RATIO_TARGET = 1.3

BARE_FIT = """
import json, sys
import pandas as pd
from xgboost import XGBClassifier
table = pd.read_parquet(sys.argv[1])
y = table.pop("label"); table.pop("id")
XGBClassifier(**json.loads(sys.argv[2])).fit(table, y).save_model(sys.argv[3])
"""


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


def measure(repo: ScratchRepo, paths: Paths, params: TrainParams, repeat: int) -> dict[str, float]:
    """Run every measurement in ``repo``; seconds per figure."""
    print("getting the data...", flush=True)
    repo.python("-m", "pipelines.stages.data")
    print("full pipeline (dvc repro, every stage)...", flush=True)
    full = timed(lambda: repo.dvc("repro"), 1)
    print(f"no-op dvc repro x{repeat}...", flush=True)
    noop = timed(lambda: repo.dvc("repro"), repeat)
    print(f"train stage vs bare fit, interleaved x{repeat}...", flush=True)
    kwargs = json.dumps(xgboost_arguments(params))
    stage, bare = interleaved(
        lambda: repo.python(
            "-m", "pipelines.stages.train", "--train", str(paths.train), "--schema",
            str(paths.schema_), "--out", str(paths.model),
        ),
        lambda: repo.python("-c", BARE_FIT, str(paths.train), kwargs, "bare-model.ubj"),
        repeat,
    )  # fmt: skip
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
            f"{'bare XGBoost fit program (baseline), fastest':<50}"
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
