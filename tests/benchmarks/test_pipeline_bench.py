"""The pipeline benchmark compares like with like."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from xgboost import XGBClassifier, XGBRegressor

from benchmarks.pipeline import BARE_FIT, bare_plan, report, stage_command
from pipelines.core.io import PipelineError
from pipelines.core.metrics import Task
from pipelines.core.model import BASELINE_KIND, SKOPS_TRUSTED
from pipelines.params import TrainParams, load_section
from pipelines.stages.train import fit
from tests.support.columns import PARAMS, ROOT


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_bare_program_fits_the_same_model_as_the_train_stage(
    task: Task, tmp_path: Path
) -> None:
    params = load_section("train", TrainParams, PARAMS)
    assert params.model == "xgboost"
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd")).astype(np.float32)
    signal = x["a"] + rng.normal(scale=0.5, size=300)
    y = signal.to_numpy() if task == "regression" else (signal > 0).astype(np.int8).to_numpy()
    table = x.copy()
    table.insert(0, "label", y)
    table.insert(0, "id", np.arange(300))
    table.to_parquet(tmp_path / "train.parquet", index=False)

    plan = bare_plan(params, task)
    bare_file = tmp_path / "bare.ubj"
    subprocess.run(
        [
            sys.executable,
            "-c",
            BARE_FIT,
            str(tmp_path / "train.parquet"),
            json.dumps(plan),
            str(bare_file),
        ],
        check=True,
    )
    bare = XGBRegressor() if task == "regression" else XGBClassifier()
    bare.load_model(bare_file)
    rows = round(300 * (1 - params.calibration_size)) if task == "regression" else 300
    stage = fit(x.iloc[:rows], y[:rows], params, task)
    np.testing.assert_array_equal(bare.predict(x), stage.predict(x))
    baseline = skops.io.load(f"{bare_file}.skops", trusted=SKOPS_TRUSTED)  # written just now
    linear = fit(
        x.iloc[:rows], y[:rows], params.model_copy(update={"model": BASELINE_KIND[task]}), task
    )
    np.testing.assert_allclose(baseline.predict(x), linear.predict(x))


def test_the_bare_program_makes_the_fits_params_ask_for() -> None:
    params = load_section("train", TrainParams, PARAMS)
    by_value = params.model_copy(update={"threshold": "value", "threshold_folds": 4})
    assert bare_plan(by_value, "binary")["folds"] == 4
    assert bare_plan(by_value.model_copy(update={"threshold": 0.3}), "binary")["folds"] == 0
    assert bare_plan(by_value, "multiclass")["folds"] == 0  # decided by expected gain, no folds
    assert bare_plan(by_value, "binary")["held_out"] == 0.0
    assert bare_plan(by_value, "regression")["held_out"] == params.calibration_size
    assert bare_plan(by_value, "binary")["logistic_regression"]["C"] == params.logistic_regression.C


def test_the_train_stage_is_run_as_dvc_lock_records_it(tmp_path: Path) -> None:
    arguments = stage_command(ROOT / "dvc.lock", "train")
    assert arguments[:2] == ["-m", "pipelines.stages.train"]
    locked = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["train"]["cmd"]
    assert " ".join(["python", *arguments]) == " ".join(locked.split())
    (tmp_path / "dvc.lock").write_text("stages:\n  train:\n    cmd: sh train.sh\n")
    with pytest.raises(PipelineError, match="does not start with python"):
        stage_command(tmp_path / "dvc.lock", "train")
    with pytest.raises(PipelineError, match="no stage 'evaluate'"):
        stage_command(tmp_path / "dvc.lock", "evaluate")


def test_report_states_the_ratio_and_the_verdict() -> None:
    figures = {
        "full_repro_s": 40.0,
        "noop_repro_s": 1.5,
        "train_stage_s": 4.0,
        "bare_fit_s": 2.0,
        "train_ratio": 2.0,
        "train_stage_median_s": 4.5,
        "bare_fit_median_s": 2.5,
        "dvc_repro_train_s": 6.0,
    }
    text = report(figures)
    assert "2.00" in text
    assert "MISSES the target" in text
    assert "meets the target" in report(figures | {"train_ratio": 1.1})
