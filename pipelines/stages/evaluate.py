"""Evaluate stage: test-set metrics, plot data for DVC, per-row predictions, segment metrics.

With ``engine.kind: dask`` the test rows are scored on the cluster
(:func:`pipelines.stages.dask_engine.score_on_dask`); the metrics are the same functions of the
gathered labels and probabilities.

Usage: ``python -m pipelines.stages.evaluate --model DIR --test FEATURES --raw RAW --schema SCHEMA
--metrics OUT --segments OUT --predictions OUT --plots DIR``
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.curves import Points, calibration_points, pr_points, roc_points, rounded
from pipelines.core.features import read_features
from pipelines.core.io import (
    PipelineError,
    atomic_path,
    path_arguments,
    run_stage,
    write_atomically,
    write_json,
)
from pipelines.core.metrics import HEADLINE, classification_metrics
from pipelines.core.model import load_model
from pipelines.params import EngineParams, EvaluateParams, load_section
from pipelines.schema import load_schema
from pipelines.stages import dask_engine


def feature_importance(model: Any, names: list[str]) -> Points:
    """Importance per feature, largest first: total gain for XGBoost, |coefficient| otherwise."""
    if hasattr(model, "get_booster"):
        gain = model.get_booster().get_score(importance_type="total_gain")
        values = [gain.get(name, 0.0) for name in names]
    else:
        coefficients = np.abs(model[-1].coef_[0])[: len(names)]  # indicator columns come last
        values = list(coefficients)
    total = float(sum(values)) or 1.0
    ranked = sorted(zip(names, values, strict=True), key=lambda nv: -nv[1])
    return [{"feature": n, "importance": rounded(v / total)} for n, v in ranked]


def segment_metrics(
    y: np.ndarray, p: np.ndarray, segments: pd.DataFrame, threshold: float
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics for each value of each segment column (rows aligned with ``y`` and ``p``)."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for column in segments.columns:
        values = segments[column].astype("string").fillna("<missing>").to_numpy()
        result[column] = {
            str(value): _rounded(
                classification_metrics(y[values == value], p[values == value], threshold)
            )
            for value in sorted(set(values))
        }
    return result


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v if isinstance(v, int) or np.isnan(v) else rounded(v) for k, v in metrics.items()}


def _nan_to_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(metrics, dict):
        return {k: _nan_to_none(v) for k, v in metrics.items()}
    return None if isinstance(metrics, float) and np.isnan(metrics) else metrics


def main(argv: list[str] | None = None) -> int:
    """Score the test set and write metrics, segments, predictions and plot data."""
    names = ("model", "test", "raw", "schema", "metrics", "segments", "predictions", "plots")
    args = path_arguments(__doc__.splitlines()[0], names, argv)
    params = load_section("evaluate", EvaluateParams)
    schema = load_schema(args.schema)
    unknown = [c for c in params.segments if c not in schema.features]
    if unknown:
        raise PipelineError(f"evaluate.segments in params.yaml names unknown features {unknown}")

    model = load_model(args.model)
    engine = load_section("engine", EngineParams)
    if engine.kind == "dask":
        y, p, ids = dask_engine.score_on_dask(
            model.model, model.meta["features"], args.test, engine
        )
    else:
        x, y, ids = read_features(args.test)
        p = model.predict_proba(x)
    raw = pd.read_csv(args.raw, usecols=[schema.id, *params.segments]).set_index(schema.id)

    metrics = _rounded(classification_metrics(y, p, params.threshold))
    write_json(args.metrics, _nan_to_none(metrics))
    write_json(
        args.segments,
        _nan_to_none(segment_metrics(y, p, raw.loc[ids, list(params.segments)], params.threshold)),
    )
    predictions = pd.DataFrame(
        {"id": ids, "label": y, "probability": p.round(8), "predicted": (p >= params.threshold)}
    ).astype({"predicted": int})
    write_atomically(args.predictions, lambda t: predictions.to_csv(t, index=False))
    with atomic_path(args.plots) as plots:
        plots.mkdir()
        write_json(plots / "roc.json", roc_points(y, p))
        write_json(plots / "precision_recall.json", pr_points(y, p))
        write_json(plots / "calibration.json", calibration_points(y, p, params.calibration_bins))
        importance = feature_importance(model.model, model.meta["features"])
        write_json(plots / "importance.json", importance)
    print("test metrics: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE))
    return 0


if __name__ == "__main__":
    run_stage(main)
