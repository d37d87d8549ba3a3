"""The model's files: making the model params name, saving it and loading it back, without pickle.

The model is saved in XGBoost's own UBJSON format, or with skops for the baseline, whose loader
builds only scikit-learn, NumPy and SciPy types and refuses anything else (a function or class of
someone else's code) instead of running it. ``meta.json`` beside it says what the model is, which
features it takes in which order, and the cross-validation scores when asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.core.io import atomic_path, write_json
from pipelines.params import TrainParams

META = "meta.json"
# Added to skops' default trust (scikit-learn estimators, NumPy/SciPy ufuncs, containers):
# the baseline's imputer stores its dtype. Building a dtype runs no foreign code.
SKOPS_TRUSTED = ["numpy.dtype"]
FILES = {"xgboost": "model.ubj", "logistic_regression": "model.skops"}


class Classifier(Protocol):
    """What the stages need of a fitted model."""

    def fit(self, x: Any, y: Any) -> Any: ...  # noqa: D102
    def predict_proba(self, x: Any) -> np.ndarray: ...  # noqa: D102


def xgboost_arguments(params: TrainParams) -> dict[str, Any]:
    """Keyword arguments of the ``XGBClassifier`` that ``params`` describes."""
    return params.xgboost.model_dump() | {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "random_state": params.seed,
    }


def make_model(params: TrainParams) -> Classifier:
    """Build the unfitted model that ``params.model`` names."""
    if params.model == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(**xgboost_arguments(params))
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(**params.logistic_regression.model_dump(), random_state=params.seed),
    )


@dataclass(frozen=True)
class LoadedModel:
    """A model read back from its directory, with its metadata."""

    model: Classifier
    meta: dict[str, Any]

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row of ``x``."""
        return np.asarray(self.model.predict_proba(x[self.meta["features"]])[:, 1])


def save_model(model: Classifier, kind: str, meta: dict[str, Any], directory: Path) -> None:
    """Write the model file and ``meta.json`` into ``directory``, atomically as a whole."""
    with atomic_path(directory) as partial:
        partial.mkdir()
        if kind == "xgboost":
            model.save_model(partial / FILES[kind])  # type: ignore[attr-defined]
        else:
            import skops.io

            skops.io.dump(model, partial / FILES[kind])
        write_json(partial / META, {"kind": kind, "file": FILES[kind], **meta})


def load_model(directory: Path) -> LoadedModel:
    """Read a model directory written by :func:`save_model`, never unpickling anything."""
    meta = json.loads((Path(directory) / META).read_text())
    path = Path(directory) / meta["file"]
    if meta["kind"] == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier()
        model.load_model(path)
    else:
        import skops.io

        model = skops.io.load(path, trusted=SKOPS_TRUSTED)
    return LoadedModel(model=model, meta=meta)
