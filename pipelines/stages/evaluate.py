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

from pipelines.params import EngineParams, EvaluateParams, load_section
from pipelines.schema import load_schema
from pipelines.stage import (
    PipelineError,
    atomic_path,
    path_arguments,
    run_stage,
    write_atomically,
    write_json,
)
from pipelines.stages.featurize import read_features

Points = list[dict[str, Any]]


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, probability and decision metrics of predictions ``p`` for labels ``y``.

    ROC and PR AUC are NaN when ``y`` holds a single class (they are undefined there).
    """
    from sklearn import metrics

    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    predicted = (p >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(metrics.roc_auc_score(y, p)) if both_classes else float("nan"),
        "pr_auc": float(metrics.average_precision_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(metrics.log_loss(y, p, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y, p, pos_label=1)),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "threshold": float(threshold),
        "rows": len(y),
        "positive_rate": float(np.mean(y)),
    }


def roc_points(y: np.ndarray, p: np.ndarray) -> Points:
    """ROC curve as ``fpr``/``tpr``/``threshold`` points."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    return [
        {"fpr": _r(f), "tpr": _r(t), "threshold": _r(min(h, 1.0))}
        for f, t, h in zip(fpr, tpr, thresholds, strict=True)
    ]


def pr_points(y: np.ndarray, p: np.ndarray) -> Points:
    """Precision-recall curve as ``recall``/``precision``/``threshold`` points."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    thresholds = np.append(thresholds, 1.0)
    return [
        {"recall": _r(r), "precision": _r(q), "threshold": _r(h)}
        for r, q, h in zip(recall, precision, thresholds, strict=True)
    ]


def calibration_points(y: np.ndarray, p: np.ndarray, bins: int) -> Points:
    """Reliability diagram: mean predicted probability vs observed rate per probability bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    points = []
    for b in range(bins):
        rows = which == b
        if rows.any():
            points.append(
                {
                    "predicted": _r(p[rows].mean()),
                    "observed": _r(y[rows].mean()),
                    "rows": int(rows.sum()),
                }
            )
    return points


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
    return [{"feature": n, "importance": _r(v / total)} for n, v in ranked]


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


def _r(value: float) -> float:
    return round(float(value), 6)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v if isinstance(v, int) or np.isnan(v) else _r(v) for k, v in metrics.items()}


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

    from pipelines.stages.train import load_model

    model = load_model(args.model)
    engine = load_section("engine", EngineParams)
    if engine.kind == "dask":
        from pipelines.stages.dask_engine import score_on_dask

        y, p, ids = score_on_dask(model.model, model.meta["features"], args.test, engine)
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
    print(
        "test metrics: "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in ("roc_auc", "pr_auc", "log_loss", "f1"))
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
