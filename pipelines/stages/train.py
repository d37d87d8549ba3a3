"""Train stage: fit the model chosen in params (XGBoost, or a scikit-learn baseline) for the task.

The schema's target says the task: binary, multiclass or regression. A regression keeps
``train.calibration_size`` of its training rows (drawn by id hash, like the test rows) out of the
fit; the absolute errors on them give the half-width of the prediction interval that holds the
true value ``serve.coverage`` of the time (split conformal: valid for any model, because the
model never saw those rows).

``engine.kind`` says where the fit runs: here (``local``), or on a Dask cluster (``dask``, XGBoost
only: :mod:`pipelines.stages.dask_engine`), which writes the same model file
(:mod:`pipelines.core.model`); ``meta.json`` says which engine fitted it.

How the model decides is stored with it (``meta.json``'s ``decision``), so that evaluation, the
service, the batch scorer and the MLflow model decide alike: a binary model's threshold
(``train.threshold``: a probability, or ``value``: the one of the highest gain of the value model
on out-of-fold predictions of the training rows, :func:`pipelines.core.value.best_threshold`); a
multiclass model's gain matrix (it decides the class of the highest expected gain); a
regression's trivial baseline (the one number of least cost on the training labels).

Usage: ``python -m pipelines.stages.train --train FEATURES --raw RAW --schema SCHEMA --out DIR``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.features import LABEL, fold_of, in_test, read_features
from pipelines.core.io import PipelineError, path_arguments, run_stage
from pipelines.core.metrics import (
    METRICS,
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    Task,
)
from pipelines.core.model import (
    BASELINE,
    BASELINE_KIND,
    Model,
    check_kind,
    make_model,
    predict,
    prior,
    save_model,
)
from pipelines.core.value import (
    ValueModel,
    amounts,
    best_threshold,
    regression_constant,
    value_model,
)
from pipelines.params import (
    EngineParams,
    ServeParams,
    TrainParams,
    ValueParams,
    load_optional,
    load_section,
)
from pipelines.schema import Schema, Target, load_schema
from pipelines.stages import dask_engine

CV_METRIC: dict[Task, str] = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def fit(x: pd.DataFrame, y: np.ndarray, params: TrainParams, task: Task = "binary") -> Model:
    """Fit the configured model on the whole training set."""
    model = make_model(params, task)
    model.fit(x, y)
    return model


def predictions(y: np.ndarray, output: np.ndarray, task: Task, classes: int) -> Predictions:
    """Predictions of ``task`` from labels and the model's outputs (no interval, no threshold)."""
    ids = np.arange(len(y))
    if task == "multiclass":
        return MulticlassPredictions.of(ids, y, output, tuple(range(classes)))
    if task == "regression":
        return RegressionPredictions(ids, y, output, output, output)
    return BinaryPredictions.at_threshold(ids, y, output, 0.5)


def cross_validate(
    x: pd.DataFrame, y: np.ndarray, params: TrainParams, task: Task = "binary", classes: int = 2
) -> dict[str, float]:
    """K-fold score of the configured model on the training set (stratified for classes).

    Returns:
        ``cv_<metric>_mean`` and ``cv_<metric>_std`` of the task's metric (binary ROC AUC,
        multiclass log loss, regression RMSE), or nothing when ``cv_folds`` < 2.
    """
    if params.cv_folds < 2:
        return {}
    from sklearn.model_selection import KFold, StratifiedKFold

    kind = KFold if task == "regression" else StratifiedKFold
    folds = kind(n_splits=params.cv_folds, shuffle=True, random_state=params.seed)
    name = CV_METRIC[task]
    scores = []
    for fit_rows, score_rows in folds.split(x, y):
        rows = (fit_rows, score_rows)
        scores.append(fold_score(x, y, rows, params, task, classes=classes, metric=name))
    return {f"cv_{name}_mean": float(np.mean(scores)), f"cv_{name}_std": float(np.std(scores))}


def fold_score(
    x: pd.DataFrame,
    y: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray],
    params: TrainParams,
    task: Task,
    *,
    classes: int,
    metric: str,
) -> float:
    """``metric`` of the model fitted on the first rows and scored on the second (positions)."""
    fit_rows, score_rows = rows
    model = fit(x.iloc[fit_rows], y[fit_rows], params, task)
    output = predict(model, x.iloc[score_rows], task)
    return METRICS[task][metric].point(predictions(y[score_rows], output, task, classes))


def out_of_fold(x: pd.DataFrame, y: np.ndarray, ids: np.ndarray, params: TrainParams) -> np.ndarray:
    """A binary model's probability for each training row from the model of the other folds.

    ``threshold_folds`` folds by a hash of the id salted with ``seed``
    (:func:`pipelines.core.features.fold_of`): a row's fold depends on its id alone.
    """
    fold = fold_of(pd.Series(ids), params.threshold_folds, params.seed)
    probability = np.empty(len(y))
    for k in range(params.threshold_folds):
        fit_rows, score_rows = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = fit(x.iloc[fit_rows], y[fit_rows], params, "binary")
        probability[score_rows] = predict(model, x.iloc[score_rows], "binary")
    return probability


def decision(
    params: TrainParams,
    task: Task,
    value: ValueModel | None,
    rows: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None = None,
    amount: np.ndarray | None = None,
) -> dict[str, Any]:
    """How the model decides (``meta.json``'s ``decision``; see the module docstring).

    ``rows`` are the training rows (features, labels, ids), None when they are on a cluster.

    Raises:
        PipelineError: ``train.threshold: value`` without a value model or without the rows.
    """
    if task == "binary":
        if params.threshold != "value":
            # 0.5 is what a model without a decision decides at (core.model.threshold_of): a
            # model trained before decisions were stored is the same model files as one now
            return {} if params.threshold == 0.5 else {"threshold": params.threshold}
        if rows is None:
            raise PipelineError("train.threshold: value needs the training rows")
        x, y, ids = rows
        print(f"tuning the threshold by value on {params.threshold_folds} folds...")
        return by_value(params, value, y, out_of_fold(x, y, ids, params), amount)
    if value is None:
        return {}
    if task == "multiclass":
        return {"gain": value.matrix.tolist()}
    return {} if rows is None else {"constant": regression_constant(value, rows[1], amount)}


def by_value(
    params: TrainParams,
    value: ValueModel | None,
    labels: np.ndarray,
    probability: np.ndarray,
    amount: np.ndarray | None,
) -> dict[str, Any]:
    """A binary model's decision at the threshold of most value on out-of-fold probabilities.

    Raises:
        PipelineError: No value model to judge the decisions by.
    """
    if value is None:
        raise PipelineError(
            "train.threshold: value needs a value: section in params.yaml (what each decision "
            "is worth, docs/value.md); or set train.threshold to a probability"
        )
    threshold, worth = best_threshold(value, labels, probability, amount)
    return {
        "threshold": round(threshold, 6),
        "by": "value",
        "folds": params.threshold_folds,
        "value_per_1000": round(worth, 4),
    }


def conformal_half_width(errors: np.ndarray, coverage: float) -> float:
    """The split-conformal half-width: the ceil((n + 1) * coverage)-th smallest absolute error.

    An interval of the prediction plus or minus it holds a new row's true value with
    probability at least ``coverage`` when the rows are exchangeable.

    Raises:
        PipelineError: Too few calibration rows for that coverage.
    """
    n = len(errors)
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        raise PipelineError(
            f"{n} calibration rows cannot give a {coverage:.0%} interval (it needs at least "
            f"{math.ceil(coverage / (1 - coverage))}): lower serve.coverage or raise "
            "train.calibration_size"
        )
    return float(np.sort(np.abs(errors))[rank - 1])


def interval(labels: np.ndarray, predicted: np.ndarray, coverage: float) -> dict[str, Any]:
    """What ``meta.json`` says of a regression's prediction interval."""
    return {
        "method": "split conformal",
        "coverage": coverage,
        "half_width": round(conformal_half_width(predicted - labels, coverage), 8),
        "calibration_rows": len(labels),
    }


def calibration_rows(
    params: TrainParams, task: Task
) -> tuple[Callable[[Any], np.ndarray] | None, float]:
    """A regression's calibration rows (whether each id is one) and its interval's coverage."""
    if task != "regression":
        return None, 0.0
    size, seed = params.calibration_size, params.seed

    def calibration(ids: Any) -> np.ndarray:
        return in_test(pd.Series(ids), size, seed, salt="calibration:")

    return calibration, load_section("serve", ServeParams).coverage


def amount_of(
    value: ValueModel | None, raw: Path, schema: Schema, ids: np.ndarray
) -> np.ndarray | None:
    """The value model's amount of each of the rows ``ids``, read from the raw table (or None)."""
    if value is None or value.amount is None:
        return None
    table = pd.read_csv(raw, usecols=[schema.id, value.amount]).set_index(schema.id)
    return amounts(value, table, ids)


def fit_baseline(
    rows: tuple[pd.DataFrame, np.ndarray, np.ndarray],
    params: TrainParams,
    target: Target,
    *,
    value: ValueModel | None,
    amount: np.ndarray | None,
    calibration: Callable[[Any], np.ndarray] | None,
    coverage: float,
) -> tuple[Model, str, dict[str, Any]]:
    """The task's linear baseline, fitted on the model's rows: what the service falls back on.

    It decides by its own rule (a binary baseline's threshold is tuned by value on its own
    out-of-fold predictions, like the model's), and a regression's interval comes from its own
    errors on the calibration rows. Its score on the rows it was fitted on (``fit_<metric>``)
    is a cheap sanity check, not an estimate of its quality on new rows.

    Returns:
        The fitted baseline, its kind and its ``meta.json`` (features, target, decision).
    """
    x, y, ids = rows
    task = target.task
    kind = BASELINE_KIND[task]
    own = params.model_copy(update={"model": kind})
    meta: dict[str, Any] = {
        "features": list(x.columns),
        "target": target.model_dump(mode="json", exclude_defaults=True),
        "fallback_for": params.model,
    }
    if calibration is not None:
        out = calibration(ids)
        model = fit(x[~out], y[~out], own, task)
        meta["interval"] = interval(y[out], predict(model, x[out], task), coverage)
        fitted = (x[~out], y[~out])
    else:
        model = fit(x, y, own, task)
        fitted = (x, y)
    metric = CV_METRIC[task]
    classes = len(np.unique(y)) if task == "multiclass" else 2
    score = METRICS[task][metric].point(
        predictions(fitted[1], predict(model, fitted[0], task), task, classes)
    )
    meta["train_rows"] = len(fitted[1])
    meta[f"fit_{metric}"] = round(score, 6)
    decided = decision(own, task, value, rows, amount)
    if decided:
        meta["decision"] = decided
    if value is not None:
        meta["value"] = value.to_meta()
    return model, kind, meta


def labels_of(path: Any) -> np.ndarray:
    """The training labels alone (a Dask model's features stay on the cluster)."""
    return pd.read_parquet(path, columns=[LABEL])[LABEL].to_numpy()


def summary(
    out: Any, meta: dict[str, Any], baseline: tuple[Model, str, dict[str, Any]] | None
) -> str:
    """What the stage wrote, in a line or two."""
    said = ", ".join(f"{k} {v:.4f}" for k, v in meta["cv"].items() if k.endswith("_mean"))
    width = f"; interval ±{meta['interval']['half_width']:.4g}" if "interval" in meta else ""
    if "threshold" in meta.get("decision", {}):
        width += f"; threshold {meta['decision']['threshold']:.4g}"
    line = f"wrote {out}/" + (f" ({said})" if said else "") + width
    if baseline is not None:
        line += f"\nwrote {out}/{BASELINE}/ ({baseline[1]}, the fallback)"
    return line


def dask_decision(
    train: Path,
    raw: Path,
    *,
    params: TrainParams,
    engine: EngineParams,
    schema: Schema,
    value: ValueModel | None,
) -> dict[str, Any]:
    """How a model fitted on Dask decides: a threshold by value fits its folds on the cluster."""
    if schema.target.task == "binary" and params.threshold == "value":
        y, probability, ids = dask_engine.out_of_fold_on_dask(train, params, engine)
        return by_value(params, value, y, probability, amount_of(value, raw, schema, ids))
    return decision(params, schema.target.task, value)


def main(argv: list[str] | None = None) -> int:
    """Fit the model on the training set and save it with its metadata."""
    args = path_arguments(__doc__.splitlines()[0], ("train", "raw", "schema", "out"), argv)
    params = load_section("train", TrainParams)
    engine = load_section("engine", EngineParams)
    dask_engine.check_engine(params, engine)
    schema = load_schema(args.schema)
    task = schema.target.task
    check_kind(params, task)
    section = load_optional("value", ValueParams)
    value = None if section is None else value_model(section, task, schema.target.labels)
    calibration, coverage = calibration_rows(params, task)
    cv: dict[str, float] = {}
    held_out = None
    baseline = None
    classes = len(schema.target.labels)
    if engine.kind == "dask":
        model, rows, features, held_out = dask_engine.train_on_dask(
            args.train, params, engine, task, calibration
        )
        decided = dask_decision(
            args.train, args.raw, params=params, engine=engine, schema=schema, value=value
        )
        # No baseline: fitting one would bring the rows here. The service falls back on the prior.
        fallback = prior(labels_of(args.train), task, classes, coverage or 0.9)
    else:
        x, y, ids = read_features(args.train)
        print(f"training {params.model} ({task}) on {len(x)} rows x {x.shape[1]} features...")
        cv = cross_validate(x, y, params, task, len(schema.target.labels))
        if calibration is not None:
            out = calibration(ids)
            model = fit(x[~out], y[~out], params, task)
            held_out = (y[out], predict(model, x[out], task))
            rows = int((~out).sum())
        else:
            model = fit(x, y, params, task)
            rows = len(x)
        features = list(x.columns)
        amount = amount_of(value, args.raw, schema, ids)
        decided = decision(params, task, value, (x, y, ids), amount)
        print(f"fitting the fallback baseline ({BASELINE_KIND[task]})...")
        baseline = fit_baseline(
            (x, y, ids),
            params,
            schema.target,
            value=value,
            amount=amount,
            calibration=calibration,
            coverage=coverage,
        )
        fallback = prior(y, task, classes, coverage or 0.9)
    chosen = getattr(params, params.model, None)
    meta: dict[str, Any] = {
        "features": features,
        # a binary target says no task: a binary model's meta is what it was before tasks
        "target": schema.target.model_dump(mode="json", exclude_defaults=True),
        "train_rows": rows,
        "engine": engine.kind,
        "params": (chosen.model_dump(mode="json", exclude_none=True) if chosen else {})
        | {"seed": params.seed},
        "cv": cv,
    }
    if decided:  # the default (0.5, the most probable class) is not written: see decision()
        meta["decision"] = decided
    if value is not None:  # what the service counts its decisions' expected value by
        meta["value"] = value.to_meta()
    if held_out is not None:
        meta["interval"] = interval(*held_out, coverage)
    meta["prior"] = fallback  # the service's last resort (pipelines/serving/fallback.py)
    save_model(model, params.model, meta, args.out, baseline)
    print(summary(args.out, meta, baseline))
    return 0


if __name__ == "__main__":
    run_stage(main)
