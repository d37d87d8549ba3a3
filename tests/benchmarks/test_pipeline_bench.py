"""The pipeline benchmark compares like with like."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from xgboost import XGBClassifier

from benchmarks.pipeline import BARE_FIT, report
from pipelines.core.model import xgboost_arguments
from pipelines.params import TrainParams, load_section
from pipelines.stages.train import fit
from tests.support.columns import PARAMS


def test_the_bare_program_fits_the_same_model_as_the_train_stage(tmp_path: Path) -> None:
    params = load_section("train", TrainParams, PARAMS)
    assert params.model == "xgboost"
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd")).astype(np.float32)
    y = (x["a"] + rng.normal(scale=0.5, size=300) > 0).astype(np.int8).to_numpy()
    table = x.copy()
    table.insert(0, "label", y)
    table.insert(0, "id", np.arange(300))
    table.to_parquet(tmp_path / "train.parquet", index=False)

    kwargs = json.dumps(xgboost_arguments(params))
    bare_file = tmp_path / "bare.ubj"
    subprocess.run(
        [sys.executable, "-c", BARE_FIT, str(tmp_path / "train.parquet"), kwargs, str(bare_file)],
        check=True,
    )
    bare = XGBClassifier()
    bare.load_model(bare_file)
    stage = fit(x, y, params)
    np.testing.assert_array_equal(bare.predict_proba(x), stage.predict_proba(x))


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
