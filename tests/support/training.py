"""A model trained in memory as the pipeline trains it, and small settings for fitting many."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import features
from pipelines.core.metrics import (
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    Task,
)
from pipelines.core.model import BASELINE_KIND, predict, prior, save_model
from pipelines.params import FeaturizeParams, TrainParams, load_paths, load_section
from pipelines.schema import Schema
from pipelines.serving.scoring import SCHEMA_FILE
from pipelines.stages import train
from tests.support.columns import PARAMS, ROOT

# The linear baseline that fits each task (train.model)
LINEAR: dict[Task, str] = {
    "binary": "logistic_regression",
    "multiclass": "logistic_regression",
    "regression": "ridge",
}
# A regression's interval half-width for models a test saves itself: any width the test knows
HALF_WIDTH = 1.25


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


THRESHOLD = 0.4  # the decision threshold of a binary model that tests save


def model_kind(kind: str, task: Task) -> str:
    """``train.model`` for ``kind`` ("xgboost", "linear" or "dummy") on a ``task`` target."""
    return LINEAR[task] if kind == "linear" else kind


def saved_meta(schema: Schema, features: list[str]) -> dict[str, Any]:
    """``meta.json``'s fields a test saves beside a model of the schema's target.

    The features and the target, as the train stage records them, so the model loads as its
    task; a regression also gets an interval of half-width :data:`HALF_WIDTH`, a binary model
    the decision threshold :data:`THRESHOLD` (not 0.5, so that a part deciding at 0.5 instead of
    the model's own threshold is caught).
    """
    meta: dict[str, Any] = {
        "features": list(features),
        "target": schema.target.model_dump(mode="json", exclude_defaults=True),
    }
    if schema.target.task == "regression":
        meta["interval"] = {"half_width": HALF_WIDTH}
    if schema.target.task == "binary":
        meta["decision"] = {"threshold": THRESHOLD}
    return meta


@dataclass(frozen=True)
class Trained:
    """A model trained with the committed params, and the raw and encoded test rows."""

    model: Any  # a fitted XGBoost or scikit-learn model
    params: TrainParams
    train_raw: pd.DataFrame
    test_raw: pd.DataFrame
    x_test: pd.DataFrame
    y_test: np.ndarray
    task: Task = "binary"

    def predict(self, rows: pd.DataFrame, schema: Schema) -> np.ndarray:
        """The model's output for raw rows (:func:`pipelines.core.model.predict`)."""
        return predict(self.model, features.encode(rows, schema), self.task)

    def test_predictions(self, schema: Schema) -> Predictions:
        """The test rows' predictions, as the evaluate stage makes them (no interval)."""
        output = predict(self.model, self.x_test, self.task)
        ids = self.test_raw[schema.id].to_numpy()
        if self.task == "multiclass":
            return MulticlassPredictions.of(ids, self.y_test, output, schema.target.labels)
        if self.task == "regression":
            return RegressionPredictions(ids, self.y_test, output, output, output)
        return BinaryPredictions.at_threshold(ids, self.y_test, output, 0.5)


def fit_on(raw: pd.DataFrame, schema: Schema, params: TrainParams) -> Trained:
    """Split, encode and fit as the pipeline does, in memory."""
    split = load_section("featurize", FeaturizeParams, PARAMS)
    train_raw, test_raw = features.split(raw, schema, split.test_size, split.seed)
    x_train = features.encode(train_raw, schema)
    task = schema.target.task
    model = train.fit(x_train, features.labels(train_raw, schema), params, task)
    return Trained(
        model=model,
        params=params,
        train_raw=train_raw,
        test_raw=test_raw,
        x_test=features.encode(test_raw, schema),
        y_test=features.labels(test_raw, schema),
        task=task,
    )


def packed_model(raw: pd.DataFrame, schema: Schema, directory: Path) -> Path:
    """XGBoost with its linear baseline and prior, saved in ``directory`` as train saves them.

    The baseline's threshold (binary) is 0.3, its own, not the model's; the directory holds
    the project's schema, as a model imported into BentoML's store does.
    """
    task = schema.target.task
    trained = fit_on(raw, schema, small_train_params("xgboost"))
    linear = fit_on(raw, schema, small_train_params(BASELINE_KIND[task]))
    meta = saved_meta(schema, list(trained.x_test.columns))
    y = features.labels(trained.train_raw, schema)
    meta["prior"] = prior(y, task, len(schema.target.labels))
    baseline_meta = saved_meta(schema, list(trained.x_test.columns))
    if task == "binary":
        baseline_meta["decision"] = {"threshold": 0.3}
    save_model(
        trained.model,
        "xgboost",
        meta,
        directory,
        (linear.model, BASELINE_KIND[task], baseline_meta),
    )
    (directory / SCHEMA_FILE).write_text((ROOT / load_paths(PARAMS).schema_).read_text())
    return directory


def fitted_estimator(directory: Path) -> Any:
    """The scikit-learn model saved in ``directory``, read with skops: the independent side.

    ``load_model`` reads a linear model back as its numbers (pipelines.core.linear); a test
    compares those with what scikit-learn computes from the saved estimator itself.
    """
    import skops.io

    from pipelines.core.model import META, SKOPS_TRUSTED

    meta = json.loads((Path(directory) / META).read_text())
    return skops.io.load(Path(directory) / meta["file"], trusted=SKOPS_TRUSTED)
