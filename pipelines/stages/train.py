"""Train stage: fit the model chosen in params (XGBoost, or a scikit-learn baseline).

The model is saved without pickle: XGBoost's own UBJSON format, or skops for the baseline, whose
loader builds only scikit-learn, NumPy and SciPy types and refuses anything else (a function or
class of someone else's code) instead of running it. ``meta.json`` beside it says what the model
is, which features it takes in which order, and the cross-validation scores when asked for.

``engine.kind`` says where the fit runs: here (``local``), or on a Dask cluster (``dask``, XGBoost
only: :mod:`pipelines.stages.dask_engine`), which writes the same model file; ``meta.json``
says which engine fitted it.

Usage: ``python -m pipelines.stages.train --train FEATURES --schema SCHEMA --out MODEL_DIR``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.params import EngineParams, TrainParams, load_section
from pipelines.schema import load_schema
from pipelines.stage import atomic_path, path_arguments, run_stage, write_json
from pipelines.stages.featurize import read_features

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


def fit(x: pd.DataFrame, y: np.ndarray, params: TrainParams) -> Classifier:
    """Fit the configured model on the whole training set."""
    model = make_model(params)
    model.fit(x, y)
    return model


def cross_validate(x: pd.DataFrame, y: np.ndarray, params: TrainParams) -> dict[str, float]:
    """Stratified k-fold ROC AUC of the configured model on the training set.

    Returns:
        ``cv_roc_auc_mean`` and ``cv_roc_auc_std``, or nothing when ``cv_folds`` < 2.
    """
    if params.cv_folds < 2:
        return {}
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=params.seed)
    scores = []
    for fit_rows, score_rows in folds.split(x, y):
        model = fit(x.iloc[fit_rows], y[fit_rows], params)
        probabilities = model.predict_proba(x.iloc[score_rows])[:, 1]
        scores.append(float(roc_auc_score(y[score_rows], probabilities)))
    return {"cv_roc_auc_mean": float(np.mean(scores)), "cv_roc_auc_std": float(np.std(scores))}


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
    import json

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


def main(argv: list[str] | None = None) -> int:
    """Fit the model on the training set and save it with its metadata."""
    args = path_arguments(__doc__.splitlines()[0], ("train", "schema", "out"), argv)
    params = load_section("train", TrainParams)
    engine = load_section("engine", EngineParams)
    # Here, not at the top: the service imports this module (load_model), and the bento holds
    # only what the service needs
    from pipelines.stages import dask_engine

    dask_engine.check_engine(params, engine)
    schema = load_schema(args.schema)

    if engine.kind == "dask":
        model, rows, features = dask_engine.train_on_dask(args.train, params, engine)
        cv: dict[str, float] = {}
    else:
        x, y, _ = read_features(args.train)
        print(f"training {params.model} on {len(x)} rows x {x.shape[1]} features...")
        cv = cross_validate(x, y, params)
        model = fit(x, y, params)
        rows, features = len(x), list(x.columns)
    meta = {
        "features": features,
        "target": schema.target.model_dump(mode="json"),
        "train_rows": rows,
        "engine": engine.kind,
        "params": params.model_dump(mode="json")[params.model] | {"seed": params.seed},
        "cv": cv,
    }
    save_model(model, params.model, meta, args.out)
    print(f"wrote {args.out}/" + (f" (cv roc_auc {cv['cv_roc_auc_mean']:.4f})" if cv else ""))
    return 0


if __name__ == "__main__":
    run_stage(main)
