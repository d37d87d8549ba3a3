"""Train stage: fit the model chosen in params (XGBoost, or a scikit-learn baseline).

``engine.kind`` says where the fit runs: here (``local``), or on a Dask cluster (``dask``, XGBoost
only: :mod:`pipelines.stages.dask_engine`), which writes the same model file
(:mod:`pipelines.core.model`); ``meta.json`` says which engine fitted it.

Usage: ``python -m pipelines.stages.train --train FEATURES --schema SCHEMA --out MODEL_DIR``
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.features import read_features
from pipelines.core.io import path_arguments, run_stage
from pipelines.core.model import Classifier, make_model, save_model
from pipelines.params import EngineParams, TrainParams, load_section
from pipelines.schema import load_schema
from pipelines.stages import dask_engine


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


def main(argv: list[str] | None = None) -> int:
    """Fit the model on the training set and save it with its metadata."""
    args = path_arguments(__doc__.splitlines()[0], ("train", "schema", "out"), argv)
    params = load_section("train", TrainParams)
    engine = load_section("engine", EngineParams)
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
