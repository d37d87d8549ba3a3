"""Fixtures shared by the test suites: the real table, its schema, and a model trained on it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from pipelines.core import features
from pipelines.core.model import Classifier
from pipelines.params import FeaturizeParams, TrainParams, load_paths, load_section
from pipelines.schema import Schema, read_raw
from pipelines.stages import train
from tests.columns import PARAMS, ROOT, project_schema
from tests.scratch import FreshClone, ScratchRepo


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_is_not_left_behind() -> Iterator[None]:
    """Fail a test that leaves MLflow pointed at its store for the tests after it.

    ``mlflow.set_tracking_uri`` sets a process-wide URI and exports it as MLFLOW_TRACKING_URI to
    every later subprocess; a test sets the variable with monkeypatch (or uses a client with an
    explicit URI) instead.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    assert os.environ.get("MLFLOW_TRACKING_URI") == before, "MLflow's tracking URI leaked"


@pytest.fixture(scope="session")
def raw() -> pd.DataFrame:
    """The project's own raw table (``paths.raw``), read as every stage reads it.

    ``make data`` runs first: it does nothing when the table matches ``data.dvc``, and otherwise
    restores it from the DVC cache or remote, or from the packaged copy that params name, and
    verifies its hash. The tests then check exactly the data the pipeline trains on.
    """
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stages.data"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"`make data` failed, so there is no table to test:\n{done.stderr}")
    return read_raw(ROOT / load_paths(PARAMS).raw)


@pytest.fixture(scope="session")
def schema() -> Schema:
    """The committed schema."""
    return project_schema()


def small_train_params(model: str, cv_folds: int = 0, seed: int = 0) -> TrainParams:
    """Small, fast settings for either model kind, for tests that fit many models."""
    return TrainParams.model_validate(
        {
            "model": model,
            "seed": seed,
            "cv_folds": cv_folds,
            "xgboost": {
                "n_estimators": 20,
                "max_depth": 2,
                "learning_rate": 0.3,
                "subsample": 1.0,
                "colsample_bytree": 1.0,
                "min_child_weight": 1.0,
                "reg_lambda": 1.0,
            },
            "logistic_regression": {"C": 1.0, "max_iter": 200},
        }
    )


@dataclass(frozen=True)
class Trained:
    """A model trained with the committed params, and the raw and encoded test rows."""

    model: Classifier
    params: TrainParams
    train_raw: pd.DataFrame
    test_raw: pd.DataFrame
    x_test: pd.DataFrame
    y_test: np.ndarray

    def predict(self, rows: pd.DataFrame, schema: Schema) -> np.ndarray:
        """Positive-class probability for raw rows."""
        return self.model.predict_proba(features.encode(rows, schema))[:, 1]


def fit_on(raw: pd.DataFrame, schema: Schema, params: TrainParams) -> Trained:
    """Split, encode and fit as the pipeline does, in memory."""
    split = load_section("featurize", FeaturizeParams, PARAMS)
    train_raw, test_raw = features.split(raw, schema, split.test_size, split.seed)
    x_train = features.encode(train_raw, schema)
    model = train.fit(x_train, features.labels(train_raw, schema), params)
    return Trained(
        model=model,
        params=params,
        train_raw=train_raw,
        test_raw=test_raw,
        x_test=features.encode(test_raw, schema),
        y_test=features.labels(test_raw, schema),
    )


@pytest.fixture(scope="session")
def trained(raw: pd.DataFrame, schema: Schema) -> Trained:
    """The default model (params.yaml as committed), trained in memory."""
    return fit_on(raw, schema, load_section("train", TrainParams, PARAMS))


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """A scratch copy of the project where `make data` and `dvc repro` have run (slow tests)."""
    repo = ScratchRepo.create(tmp_path_factory.mktemp("trained"))
    repo.python("-m", "pipelines.stages.data")
    repo.dvc("repro")
    return repo


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> FreshClone:
    """`make run` in a fresh copy on a machine without uv (reusing this environment).

    Shared by the pipeline tests and the docs' commands, so the pipeline runs once for both; a
    test that changes the copy puts it back, or works on a ``repo.copy()``.
    """
    repo = ScratchRepo.create(tmp_path_factory.mktemp("project"))
    assert not (repo.path / "data").exists()
    repo.hide_uv(tmp_path_factory.mktemp("bin"))
    return FreshClone(repo, repo.run("make", "run"))
