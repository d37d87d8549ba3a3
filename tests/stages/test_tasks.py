"""Each task through validate, featurize, train and evaluate on a real public table.

The first model beats the dummy baseline (the prior or the mean) on the task's primary metric,
the linear baseline trains, the outputs keep their contract (metrics keys, prediction columns,
labels in the data's own terms), and a regression's interval covers what it promises.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.io import PipelineError
from pipelines.core.metrics import METRICS
from pipelines.core.model import load_model, make_model
from pipelines.core.value import KEYS as VALUE_KEYS
from pipelines.params import TrainParams
from tests.support.columns import PARAMS
from tests.support.tasks import SMALL_XGBOOST, Project, pipeline

KEYS = {
    "regression": {"rmse", "mae", "r2", "coverage", "rows"},
    "multiclass": {
        "log_loss",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "roc_auc_ovr",
        "min_class_recall",
        "rows",
    },
}
PRIMARY = {"regression": "rmse", "multiclass": "log_loss"}
LINEAR = {"regression": "ridge", "multiclass": "logistic_regression"}


@pytest.fixture(scope="module", params=["regression", "multiclass"])
def models(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Project]:
    """The task's table run through the stages with XGBoost, the linear and the dummy model."""
    task = request.param
    made = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for kind in ("xgboost", LINEAR[task], "dummy"):
            made[kind] = pipeline(
                tmp_path_factory.mktemp(f"{task}-{kind}"), task, monkeypatch, model=kind
            )
    return made


def task_of(models: dict[str, Project]) -> str:
    return models["xgboost"].schema.target.task


def test_the_metrics_file_has_the_tasks_keys(models: dict[str, Project]) -> None:
    task = task_of(models)
    for kind, made in models.items():
        metrics = made.json("metrics.json")
        assert KEYS[task] | set(VALUE_KEYS) <= set(metrics), kind
        extra = {"threshold", "positive_rate", *VALUE_KEYS}
        assert set(metrics) - {"rows"} <= set(METRICS[task]) | extra


def test_xgboost_beats_the_dummy_and_the_linear_baseline_trains(
    models: dict[str, Project],
) -> None:
    task = task_of(models)
    name = PRIMARY[task]
    sign = METRICS[task][name].sign
    value = {kind: made.json("metrics.json")[name] for kind, made in models.items()}
    assert sign * (value["xgboost"] - value["dummy"]) > 0, value
    assert sign * (value[LINEAR[task]] - value["dummy"]) > 0, value


def test_predictions_speak_the_datas_terms(models: dict[str, Project]) -> None:
    made = models["xgboost"]
    task = task_of(models)
    frame = pd.read_csv(made.path("predictions.csv"))
    raw = pd.read_csv(made.path("raw.csv")).set_index("rownames")
    column = made.schema.target.column
    if task == "multiclass":
        classes = [str(c) for c in made.schema.target.labels]
        assert list(frame.columns) == [
            "id",
            "label",
            "predicted",
            *[f"probability_{c}" for c in classes],
        ]
        assert set(frame["label"].astype(str)) <= set(classes)
        assert set(frame["predicted"].astype(str)) <= set(classes)
        assert (
            frame["label"].astype(str) == raw.loc[frame["id"], column].astype(str).to_numpy()
        ).all()
        sums = frame[[f"probability_{c}" for c in classes]].sum(axis=1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    else:
        assert list(frame.columns) == ["id", "label", "prediction", "low", "high"]
        np.testing.assert_allclose(frame["label"], raw.loc[frame["id"], column].to_numpy())
        assert (frame["low"] <= frame["prediction"]).all()
        assert (frame["prediction"] <= frame["high"]).all()


def test_a_regressions_interval_covers_what_it_promises(models: dict[str, Project]) -> None:
    """The test rows' coverage is within what chance allows around serve.coverage.

    Split conformal guarantees at least the target on average; on n test rows the observed
    share varies by about sqrt(c(1 - c)/n), so the bound is 3 of those below and above.
    """
    made = models["xgboost"]
    meta = load_model(made.path("model")).meta
    if task_of(models) != "regression":
        assert "interval" not in meta  # a classifier's probabilities need none
        return
    target = meta["interval"]["coverage"]
    frame = pd.read_csv(made.path("predictions.csv"))
    inside = ((frame["low"] <= frame["label"]) & (frame["label"] <= frame["high"])).mean()
    spread = math.sqrt(target * (1 - target) / len(frame))
    assert made.json("metrics.json")["coverage"] == pytest.approx(inside, abs=1e-6)
    assert (
        target - 3 * spread
        <= inside
        <= target + 3 * spread + 1 / meta["interval"]["calibration_rows"]
    )
    # the half-width is the conformal quantile of the calibration rows' absolute errors
    rank = math.ceil((meta["interval"]["calibration_rows"] + 1) * target)
    assert rank <= meta["interval"]["calibration_rows"]
    assert meta["train_rows"] + meta["interval"]["calibration_rows"] == len(
        pd.read_parquet(made.path("train.parquet"))
    )


def test_the_model_file_says_its_task_and_classes(models: dict[str, Project]) -> None:
    made = models["xgboost"]
    meta = load_model(made.path("model")).meta
    assert meta["target"]["task"] == task_of(models)
    if task_of(models) == "multiclass":
        assert meta["target"]["classes"] == list(made.schema.target.labels)


def test_segments_and_plots_are_written_per_task(models: dict[str, Project]) -> None:
    made = models["xgboost"]
    task = task_of(models)
    segments = made.json("segments.json")
    (column,) = segments
    for group in segments[column].values():
        assert KEYS[task] <= set(group)
    plots = {p.name for p in made.path("plots").iterdir()}
    assert plots == {"calibration.json", "importance.json"}
    calibration = made.json("plots/calibration.json")
    assert sum(point["rows"] for point in calibration) == made.json("metrics.json")["rows"]


def test_the_conformal_rank_is_the_textbook_one() -> None:
    """ceil((n + 1) c)-th smallest error: checked against scipy's order-statistic quantile."""
    from pipelines.stages.train import conformal_half_width

    errors = np.random.default_rng(0).exponential(size=99)
    for coverage in (0.5, 0.8, 0.9, 0.95):
        rank = math.ceil(100 * coverage)
        assert conformal_half_width(errors, coverage) == np.sort(errors)[rank - 1]
        # the guarantee: a new exchangeable error falls at or under it with prob rank/(n + 1)
        assert rank / 100 >= coverage
    with pytest.raises(Exception, match="cannot give a 99% interval"):
        conformal_half_width(errors[:10], 0.99)


def test_a_regressions_loss_is_chosen_in_params_and_a_classifier_refuses_one(
    models: dict[str, Project], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = task_of(models)
    train = yaml.safe_load(PARAMS.read_text())["train"]
    block = train["xgboost"] | SMALL_XGBOOST
    loss = {"objective": "reg:absoluteerror"}
    if task != "regression":
        with pytest.raises(PipelineError, match=r"train\.xgboost\.objective: reg:absoluteerror"):
            make_model(TrainParams.model_validate(train | {"xgboost": block | loss}), task)
        return
    made = pipeline(tmp_path / "l1", task, monkeypatch, xgboost=block | loss)
    booster = load_model(made.path("model")).model.get_booster()  # type: ignore[attr-defined]
    assert json.loads(booster.save_config())["learner"]["objective"]["name"] == loss["objective"]
    squared = pd.read_csv(models["xgboost"].path("predictions.csv"))["prediction"]
    absolute = pd.read_csv(made.path("predictions.csv"))["prediction"]
    assert not np.allclose(squared, absolute)  # another loss, another model
