"""Evaluate stage: test-set metrics, plot data for DVC, per-row predictions, segment metrics.

The metrics are the registry's for the model's task (:mod:`pipelines.core.metrics`). The plots:
every task has the feature importance and a reliability curve (binary: observed positive rate
against the predicted probability; multiclass: accuracy against the top probability; regression:
mean actual against mean prediction, per prediction decile); a binary model adds its ROC and
precision-recall curves. A regression's predictions carry its interval (``meta.json``).

Decisions are the model's own (``meta.json``'s ``decision``: a binary model's threshold, a
multiclass model's gain matrix). With a value model (``value:`` in params), the metrics add the
value per 1,000 rows at those decisions, the best trivial policy's, and the paired bootstrap
interval of the lift over it (:mod:`pipelines.core.value`); a binary model's plots add the value
curve against the threshold. With the groups of ``fairness:``, ``--fairness`` gets each group's
rates and the gaps between groups with their intervals (:mod:`pipelines.core.fairness`); without
them, an empty object.

With ``engine.kind: dask`` the test rows are scored on the cluster
(:func:`pipelines.stages.dask_engine.score_on_dask`); the metrics are the same functions of the
gathered labels and outputs.

Usage: ``python -m pipelines.stages.evaluate --model DIR --test FEATURES --raw RAW --schema SCHEMA
--metrics OUT --segments OUT --fairness OUT --predictions OUT --plots DIR``
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.curves import (
    Points,
    calibration_points,
    pr_points,
    quantile_points,
    roc_points,
    rounded,
)
from pipelines.core.fairness import audit
from pipelines.core.features import read_features
from pipelines.core.io import (
    PipelineError,
    atomic_path,
    path_arguments,
    run_stage,
    write_atomically,
    write_json,
)
from pipelines.core.linear import Linear
from pipelines.core.metrics import (
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    evaluation_metrics,
    headline,
)
from pipelines.core.model import LoadedModel, load_model
from pipelines.core.value import amounts, curve, lift, value_model
from pipelines.params import (
    EngineParams,
    EvaluateParams,
    FairnessParams,
    ValueParams,
    load_optional,
    load_section,
)
from pipelines.schema import load_schema
from pipelines.stages import dask_engine


def feature_importance(model: Any, names: list[str]) -> Points:
    """Importance per feature, largest first.

    Total gain for XGBoost, |coefficient| of a linear model (averaged over a multiclass
    model's classes), nothing for the dummy.
    """
    if hasattr(model, "get_booster"):
        gain = model.get_booster().get_score(importance_type="total_gain")
        values = [gain.get(name, 0.0) for name in names]
    elif isinstance(model, Linear):  # inputs x outputs; the indicator columns come last
        values = list(np.abs(model.coefficients).mean(axis=1)[: len(names)])
    else:
        values = [0.0] * len(names)
    total = float(sum(values)) or 1.0
    ranked = sorted(zip(names, values, strict=True), key=lambda nv: -nv[1])
    return [{"feature": n, "importance": rounded(v / total)} for n, v in ranked]


def segment_metrics(
    predictions: Predictions, segments: pd.DataFrame, threshold: float | None
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics for each value of each segment column (rows aligned with ``predictions``)."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for column in segments.columns:
        values = segments[column].astype("string").fillna("<missing>").to_numpy()
        result[column] = {
            str(value): _rounded(
                evaluation_metrics(predictions.take(np.flatnonzero(values == value)), threshold)
            )
            for value in sorted(set(values))
        }
    return result


def plots(predictions: Predictions, bins: int) -> dict[str, Points]:
    """The plot files of the task (the reliability curve always, the binary curves)."""
    if isinstance(predictions, BinaryPredictions):
        y, p = predictions.label, predictions.probability
        return {
            "roc.json": roc_points(y, p),
            "precision_recall.json": pr_points(y, p),
            "calibration.json": calibration_points(y, p, bins),
        }
    if isinstance(predictions, MulticlassPredictions):
        top = predictions.probability.max(axis=1)
        right = (predictions.predicted == predictions.label).astype(np.float64)
        return {"calibration.json": calibration_points(right, top, bins)}
    if isinstance(predictions, RegressionPredictions):
        points = quantile_points(predictions.label, predictions.predicted, bins)
        return {"calibration.json": points}
    raise TypeError(f"no plots for {type(predictions).__name__}")


def value_metrics(
    predictions: Predictions, model: LoadedModel, params: ValueParams, raw: pd.DataFrame
) -> tuple[dict[str, float], Points]:
    """The value metrics of the predictions and, for a binary model, the value curve.

    ``raw`` is the raw table indexed by id (for the amount column).
    """
    target = model.meta["target"]
    value = value_model(params, model.task, tuple(target.get("classes") or ()))
    amount = amounts(value, raw, predictions.ids)
    decided = predictions.predicted  # type: ignore[attr-defined]
    gains = value.gains(predictions.label, decided, amount)
    constant = model.meta.get("decision", {}).get("constant")
    result = lift(
        value,
        gains,
        value.trivial(predictions.label, amount, constant),
        resamples=params.resamples,
        seed=params.seed,
        confidence=params.confidence,
    )
    points: Points = []
    if isinstance(predictions, BinaryPredictions):
        points = curve(value, predictions.label, predictions.probability, amount)
    return result.metrics(), points


def fairness_of(
    predictions: Predictions, raw: pd.DataFrame, params: FairnessParams | None
) -> dict[str, Any]:
    """The fairness audit of the predictions (``raw``: their rows of the raw table, in order)."""
    if params is None:
        return {}
    return audit(
        predictions.task,
        predictions.label,
        predictions.predicted,  # type: ignore[attr-defined]
        {c: raw[c].to_numpy() for c in params.sensitive},
        min_group_rows=params.min_group_rows,
        resamples=params.resamples,
        seed=params.seed,
        confidence=params.confidence,
    )


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v if isinstance(v, int) or np.isnan(v) else rounded(v) for k, v in metrics.items()}


def _nan_to_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(metrics, dict):
        return {k: _nan_to_none(v) for k, v in metrics.items()}
    return None if isinstance(metrics, float) and np.isnan(metrics) else metrics


def main(argv: list[str] | None = None) -> int:
    """Score the test set and write metrics, segments, predictions and plot data."""
    arguments = ("model", "test", "raw", "schema", "metrics", "segments", "fairness")
    args = path_arguments(__doc__.splitlines()[0], (*arguments, "predictions", "plots"), argv)
    params = load_section("evaluate", EvaluateParams)
    schema = load_schema(args.schema)
    fairness = load_optional("fairness", FairnessParams)
    for key, names in (
        ("evaluate.segments", params.segments),
        ("fairness.sensitive", fairness.sensitive if fairness else ()),
    ):
        unknown = [c for c in names if c not in schema.checked]
        if unknown:
            raise PipelineError(
                f"{key} in params.yaml names columns {unknown} that are neither features: nor "
                "audit: in schema.yaml"
            )

    model = load_model(args.model)
    if model.task != schema.target.task:
        raise PipelineError(
            f"the model at {args.model} is {model.task} but {args.schema} says "
            f"{schema.target.task}: run `dvc repro` to train it again"
        )
    engine = load_section("engine", EngineParams)
    if engine.kind == "dask":
        y, output, ids = dask_engine.score_on_dask(
            model.model, model.meta["features"], args.test, engine
        )
    else:
        x, y, ids = read_features(args.test)
        output = model.predict(x)
    predictions = model.predictions(ids, y, output)
    value = load_optional("value", ValueParams)
    columns = [*params.segments, *([value.amount] if value and value.amount else [])]
    columns += list(fairness.sensitive) if fairness else []
    raw = pd.read_csv(args.raw, usecols=[schema.id, *dict.fromkeys(columns)])
    raw = raw.set_index(schema.id)

    threshold = model.threshold if model.task == "binary" else None
    metrics = _rounded(evaluation_metrics(predictions, threshold))
    value_points: Points = []
    if value is not None:
        worth, value_points = value_metrics(predictions, model, value, raw)
        metrics |= _rounded(worth)
    write_json(args.metrics, _nan_to_none(metrics))
    write_json(
        args.segments,
        _nan_to_none(segment_metrics(predictions, raw.loc[ids, list(params.segments)], threshold)),
    )
    write_json(args.fairness, fairness_of(predictions, raw.loc[ids], fairness))
    table = predictions.to_frame()
    write_atomically(args.predictions, lambda t: table.to_csv(t, index=False))
    with atomic_path(args.plots) as folder:
        folder.mkdir()
        for name, points in plots(predictions, params.calibration_bins).items():
            write_json(folder / name, points)
        importance = feature_importance(model.model, model.meta["features"])
        write_json(folder / "importance.json", importance)
        if value_points:
            write_json(folder / "value.json", value_points)
    shown = headline(model.task)
    print("test metrics: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown))
    if value is not None:
        print(
            f"value per 1,000 {value.unit}: {metrics['value_per_1000']:,.2f} {value.currency} "
            f"(best trivial policy {metrics['value_trivial_per_1000']:,.2f})"
        )
    return 0


if __name__ == "__main__":
    run_stage(main)
