"""A model trained in memory as the pipeline trains it, and small settings for fitting many."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import features
from pipelines.params import FeaturizeParams, TrainParams, load_section
from pipelines.schema import Schema
from pipelines.stages import train
from tests.support.columns import PARAMS


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

    model: Any  # a fitted XGBoost or scikit-learn classifier
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
