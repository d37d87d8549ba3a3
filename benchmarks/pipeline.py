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

from pipelines.params import Paths, TrainParams, load_paths, load_section
from tests.scratch import ScratchRepo

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
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_fit_kwargs(params: TrainParams) -> dict[str, Any]:
    """The XGBoost arguments the train stage uses, for the bare program."""
    return params.xgboost.model_dump() | {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "random_state": params.seed,
    }


def measure(repo: ScratchRepo, paths: Paths, params: TrainParams, repeat: int) -> dict[str, float]:
    """Run every measurement in ``repo``; seconds per figure."""
    print("getting the data...", flush=True)
    repo.python("-m", "pipelines.data")
    print("full pipeline (dvc repro, every stage)...", flush=True)
    full = timed(lambda: repo.dvc("repro"), 1)
    print(f"no-op dvc repro x{repeat}...", flush=True)
    noop = timed(lambda: repo.dvc("repro"), repeat)
    print(f"train stage vs bare fit x{repeat}...", flush=True)
    out = str(paths.model)
    stage = timed(
        lambda: repo.python(
            "-m", "pipelines.train", "--train", str(paths.train), "--schema",
            str(paths.schema_), "--out", out,
        ),
        repeat,
    )  # fmt: skip
    kwargs = json.dumps(bare_fit_kwargs(params))
    bare = timed(
        lambda: repo.python("-c", BARE_FIT, str(paths.train), kwargs, "bare-model.ubj"), repeat
    )
    dvc_stage = timed(lambda: repo.dvc("repro", "--force", "--single-item", "train"), 1)
    return {
        "full_repro_s": full,
        "noop_repro_s": noop,
        "train_stage_s": stage,
        "bare_fit_s": bare,
        "train_ratio": stage / bare,
        "dvc_repro_train_s": dvc_stage,
    }


def report(figures: dict[str, float]) -> str:
    """The benchmark table."""
    verdict = "meets" if figures["train_ratio"] <= TRAIN_RATIO_TARGET else "MISSES"
    return "\n".join(
        [
            f"{'measure':<44}{'seconds':>10}{'ratio':>10}",
            f"{'full pipeline, dvc repro from scratch':<44}{figures['full_repro_s']:>10.2f}",
            f"{'no-op dvc repro':<44}{figures['noop_repro_s']:>10.2f}",
            f"{'bare XGBoost fit program (baseline)':<44}{figures['bare_fit_s']:>10.2f}"
            f"{1.0:>10.2f}",
            f"{'train stage (python -m pipelines.train)':<44}{figures['train_stage_s']:>10.2f}"
            f"{figures['train_ratio']:>10.2f}",
            f"{'dvc repro --force -s train (adds DVC)':<44}{figures['dvc_repro_train_s']:>10.2f}"
            f"{figures['dvc_repro_train_s'] / figures['bare_fit_s']:>10.2f}",
            f"train stage / bare fit = {figures['train_ratio']:.2f}: {verdict} the target "
            f"of at most {TRAIN_RATIO_TARGET}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure in a scratch copy and print the table; figures also go to a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed figure (median)")
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
