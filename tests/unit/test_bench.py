"""The pipeline benchmark compares like with like."""

from __future__ import annotations

from benchmarks.pipeline import bare_fit_kwargs, report
from pipelines.params import TrainParams, load_section
from pipelines.train import make_model
from tests.conftest import PARAMS


def test_bare_fit_builds_the_same_model_as_the_train_stage() -> None:
    from xgboost import XGBClassifier

    params = load_section("train", TrainParams, PARAMS)
    assert params.model == "xgboost"
    bare = XGBClassifier(**bare_fit_kwargs(params))
    assert bare.get_params() == make_model(params).get_params()  # type: ignore[attr-defined]


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
