"""Card stage: the model card, in Hugging Face's format, from the outputs of the pipeline.

The card (``paths.card``, beside the model) is YAML front matter with a ``model-index`` whose
results are the test metrics, then Markdown: the human-owned text of ``paths.card_text``
(intended and out-of-scope use, known limitations), the training data (hash, rows, time of the
snapshot, and the target: its class balance, or a regression target's quantiles), the test
metrics of the model's task with bootstrap intervals (the gate's metric functions,
:mod:`pipelines.core.metrics`), calibration as the task has it, metrics per segment with
intervals and the largest gap between groups, generated limitations, and the lineage (commit,
``dvc.lock`` output hashes, MLflow run and model URI, params). The Markdown is
:mod:`pipelines.stages.card_markdown`'s.

Usage: ``python -m pipelines.stages.card --raw RAW --schema SCHEMA --data-dvc DVCFILE
--predictions CSV --metrics JSON --plots DIR --registry JSON --model DIR --text MD --out MD``
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.core.io import PipelineError, path_arguments, run_stage, write_atomically
from pipelines.core.lineage import data_hash, stage_hashes
from pipelines.core.metrics import (
    BETTER,
    METRICS,
    Predictions,
    Task,
    headline,
    interval,
    label_of,
    point_metrics,
    read_predictions,
)
from pipelines.params import (
    DEFAULT_PARAMS,
    CardParams,
    EvaluateParams,
    RegisterParams,
    ValueParams,
    load_optional,
    load_section,
)
from pipelines.schema import Schema, load_schema, read_raw
from pipelines.stages.card_markdown import Interval, render_card

MISSING = "<missing>"  # a missing segment value, named as the evaluate stage names it
TASKS: dict[Task, dict[str, str]] = {  # Hugging Face's task of each of ours
    "binary": {"type": "tabular-classification", "name": "Binary classification"},
    "multiclass": {"type": "tabular-classification", "name": "Multiclass classification"},
    "regression": {"type": "tabular-regression", "name": "Regression"},
}
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)  # of a regression's target, in the card
LIBRARIES = {"xgboost": "xgboost", "logistic_regression": "sklearn"}  # Hugging Face's names


@dataclass(frozen=True)
class Gap:
    """The largest difference of one metric between the groups of one segment column."""

    column: str
    metric: str
    best: str
    worst: str
    gap: float


# --- pure core ------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def metric_intervals(
    predictions: Predictions,
    names: list[str],
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Interval]:
    """Each metric's value on the rows and its bootstrap percentile interval.

    The resampled metrics are the gate's (:data:`pipelines.core.metrics.METRICS`): the same
    definitions the pull-request gate compares, evaluated for all resamples at once.

    Returns:
        ``{metric: {"value", "low", "high"}}``; None where undefined (one class only, NaN).
    """
    if len(predictions) == 0:
        return {name: {"value": None, "low": None, "high": None} for name in names}
    values = point_metrics(predictions, names)
    rows = predictions.rows()
    rng = np.random.default_rng(seed)
    n = len(predictions)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    ordered = counts[:, rows.order]
    result = {}
    for name in names:
        low, high = interval(METRICS[predictions.task][name].weighted(rows, ordered), confidence)
        result[name] = {"value": _finite(values[name]), "low": _finite(low), "high": _finite(high)}
    return result


def segment_intervals(
    predictions: pd.DataFrame,
    groups: pd.DataFrame,
    names: list[str],
    params: CardParams,
    *,
    task: Task = "binary",
    classes: tuple[Any, ...] = (),
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics with intervals for each group of each segment column.

    Args:
        predictions: The rows of ``eval/predictions.csv`` (the columns of the model's task).
        groups: The segment columns, indexed by id (rows of the raw table).
        names: Metrics to compute.
        params: The card's settings: groups under ``min_segment_rows`` are suppressed (their
            rows counted, no metric shown: too few rows to say anything).
        task: The model's task: how to read the rows.
        classes: A multiclass model's classes, in order.

    Returns:
        ``{column: {group: {"rows", "positives", "suppressed", "metrics": {metric: interval}}}}``.
    """
    missing = [i for i in predictions["id"] if i not in groups.index]
    if missing:
        raise PipelineError(
            f"{len(missing)} test ids (e.g. {missing[0]!r}) are not in the raw table: "
            "run `dvc repro` so the predictions come from the current data"
        )
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for column in groups.columns:
        values = groups.loc[predictions["id"], column].astype("string").fillna(MISSING).to_numpy()
        result[column] = {}
        for value in sorted(set(values)):
            rows = predictions[values == value]
            suppressed = len(rows) < params.min_segment_rows
            entry: dict[str, Any] = {
                "rows": len(rows),
                "positives": int(rows["label"].sum()) if task == "binary" else None,
                "suppressed": suppressed,
                "metrics": {},
            }
            if not suppressed:
                entry["metrics"] = metric_intervals(
                    read_predictions(rows, task, classes),
                    names,
                    resamples=params.resamples,
                    seed=params.seed,
                    confidence=params.confidence,
                )
            result[column][str(value)] = entry
    return result


def largest_gaps(segments: dict[str, dict[str, dict[str, Any]]], names: list[str]) -> list[Gap]:
    """For each segment column and metric, the best and worst shown group and their gap.

    Suppressed groups and undefined values take no part. Largest gap first.
    """
    gaps = []
    for column, groups in segments.items():
        for name in names:
            shown = {
                group: entry["metrics"][name]["value"]
                for group, entry in groups.items()
                if not entry["suppressed"] and entry["metrics"][name]["value"] is not None
            }
            if len(shown) < 2:
                continue
            lower = BETTER[name] == "lower"
            ranked = sorted(shown, key=lambda g: shown[g], reverse=not lower)
            best, worst = ranked[0], ranked[-1]
            gaps.append(Gap(column, name, best, worst, round(abs(shown[best] - shown[worst]), 6)))
    return sorted(gaps, key=lambda g: -g.gap)


def segment_metric_names(task: Task, configured: tuple[str, ...]) -> tuple[list[str], str | None]:
    """The metrics of the segment tables: ``card.segment_metrics`` when they are the task's.

    Otherwise (the binary default in a regression model's params, say) the task's headline
    metrics, and a sentence that says so.

    Raises:
        PipelineError: A configured name is no metric of any task (a typo).
    """
    unknown = sorted(set(configured) - set(BETTER))
    if unknown:
        raise PipelineError(
            f"card.segment_metrics names unknown metrics {unknown}: use {list(METRICS[task])}"
        )
    if set(configured) <= set(METRICS[task]):
        return list(configured), None
    names = list(headline(task))
    others = ", ".join(n for n in configured if n not in METRICS[task])
    return names, (
        f"card.segment_metrics names {others}, not metrics of a {task} model: the tables show "
        f"its headline metrics ({', '.join(label_of(n) for n in names)})."
    )


def class_counts(target: pd.Series, classes: tuple[Any, ...]) -> dict[str, int]:
    """Rows of each class of a multiclass target, in the model's class order."""
    text = target.astype("string")
    return {str(c): int((text == str(c)).sum()) for c in classes}


def target_quantiles(target: pd.Series) -> dict[str, float]:
    """A regression target's :data:`QUANTILES` and mean (missing values left out)."""
    values = pd.to_numeric(target, errors="coerce").dropna().to_numpy(dtype=np.float64)
    points = np.quantile(values, QUANTILES)
    names = {0.0: "min", 0.5: "median", 1.0: "max"}
    named = {
        names.get(q, f"{q:.0%}"): round(float(v), 6) for q, v in zip(QUANTILES, points, strict=True)
    }
    return named | {"mean": round(float(values.mean()), 6)}


def class_balance(target: pd.Series, positive: str | int) -> dict[str, Any]:
    """Rows per class of the target column, and the share of the positive class."""
    counts = target.astype("string").value_counts(dropna=False)
    return {
        "classes": {str(k): int(v) for k, v in counts.items()},
        "positive": str(positive),
        "positive_share": round(float((target.astype("string") == str(positive)).mean()), 6),
    }


def expected_calibration_error(points: list[dict[str, Any]]) -> float | None:
    """Row-weighted mean |predicted - observed| over the calibration bins (None: no bins)."""
    rows = sum(int(p["rows"]) for p in points)
    if not rows:
        return None
    error = sum(int(p["rows"]) * abs(p["predicted"] - p["observed"]) for p in points) / rows
    return round(error, 6)


def card_metadata(
    name: str,
    metrics: dict[str, Any],
    dataset: str,
    data_md5: str,
    library: str,
    *,
    task: Task = "binary",
) -> dict[str, Any]:
    """The front matter: Hugging Face model card metadata with a ``model-index``.

    The results are the test metrics of ``metrics`` (``eval/metrics.json``) of the model's
    task, with their values exactly as written there.
    """
    results = [
        {"type": key, "value": metrics[key], "name": label_of(key)}
        for key in METRICS[task]
        if isinstance(metrics.get(key), int | float)
    ]
    return {
        "library_name": library,
        "tags": [TASKS[task]["type"]],
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": dict(TASKS[task]),
                        "dataset": {
                            "type": dataset,
                            "name": dataset,
                            "split": "test",
                            "revision": data_md5,
                        },
                        "metrics": results,
                    }
                ],
            }
        ],
    }


def generated_limitations(
    segments: dict[str, dict[str, dict[str, Any]]],
    gaps: list[Gap],
    metrics: dict[str, Interval],
    params: CardParams,
) -> list[str]:
    """Facts the numbers say: suppressed groups, the widest gaps, undefined metrics."""
    facts = []
    for column, groups in segments.items():
        small = [f"{g} ({e['rows']} rows)" for g, e in groups.items() if e["suppressed"]]
        if small:
            facts.append(
                f"`{column}`: {', '.join(small)} under {params.min_segment_rows} test rows; "
                "no metric is reported for them and the model is unmeasured there."
            )
    for gap in gaps[:3]:
        facts.append(
            f"{label_of(gap.metric)} differs by {gap.gap:.4f} across `{gap.column}` "
            f"({gap.best} best, {gap.worst} worst)."
        )
    undefined = [label_of(n) for n, e in metrics.items() if e["low"] is None]
    if undefined:
        facts.append(f"No interval for {', '.join(undefined)} (undefined on some resamples).")
    return facts


def target_facts(target: pd.Series, schema: Schema) -> dict[str, Any]:
    """What the card says of the target column: per task, its balance or its distribution."""
    if schema.target.task == "regression":
        return {"quantiles": target_quantiles(target)}
    if schema.target.task == "multiclass":
        return {"classes": class_counts(target, schema.target.labels)}
    return {"balance": class_balance(target, schema.target.positive)}  # type: ignore[arg-type]


def card_facts(
    *,
    name: str,
    schema: Schema,
    raw: pd.DataFrame,
    predictions: pd.DataFrame,
    metrics: dict[str, Any],
    calibration: list[dict[str, Any]],
    registry: dict[str, Any],
    lock: dict[str, Any],
    params: dict[str, Any],
    segment_columns: list[str],
    card: CardParams,
    data_md5: str,
    snapshot: str,
    dataset: str,
    library: str,
    text_path: str,
    interval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the card says, as one JSON-ready dict (see :func:`render_card`).

    ``interval``: a regression model's prediction interval, as its ``meta.json`` says.
    """
    target = schema.target
    names = [n for n in METRICS[target.task] if isinstance(metrics.get(n), int | float)]
    test = read_predictions(predictions, target.task, target.labels)
    overall = metric_intervals(
        test, names, resamples=card.resamples, seed=card.seed, confidence=card.confidence
    )
    groups = raw.set_index(schema.id)[segment_columns]
    configured, segment_note = segment_metric_names(target.task, card.segment_metrics)
    segment_names = [n for n in configured if n in names]
    segments = segment_intervals(
        predictions, groups, segment_names, card, task=target.task, classes=target.labels
    )
    gaps = largest_gaps(segments, segment_names)
    return {
        "name": name,
        "task": target.task,
        "text_path": text_path,
        "metadata": card_metadata(name, metrics, dataset, data_md5, library, task=target.task),
        "confidence": card.confidence,
        "resamples": card.resamples,
        "min_segment_rows": card.min_segment_rows,
        "data": {
            "md5": data_md5,
            "snapshot": snapshot,
            "rows": len(raw),
            "test_rows": len(predictions),
            "train_rows": len(raw) - len(predictions),
            **target_facts(raw[target.column], schema),
        },
        "metrics": overall,
        "calibration": {
            "task": target.task,
            "ece": expected_calibration_error(calibration) if target.task == "binary" else None,
            "points": calibration,
            "coverage": metrics.get("coverage"),
            "interval": interval,
        },
        "segment_metrics": segment_names,
        "segment_note": segment_note,
        "segments": segments,
        "gaps": [vars(g) for g in gaps],
        "limitations": generated_limitations(segments, gaps, overall, card),
        "lineage": {
            "git_commit": registry.get("git_commit", "unknown"),
            "mlflow_run_id": registry.get("run_id", "none"),
            "mlflow_model_uri": registry.get("model_uri", "none"),
            "stages": {s: h for s, h in stage_hashes(lock).items() if s != "card"},
            "params": params,
        },
    }


# --- the stage ------------------------------------------------------------------------------


def snapshot_time(dvc_file: Path) -> str:
    """When the data's ``.dvc`` file was last committed, or that it is not committed yet."""
    done = subprocess.run(
        ["git", "log", "-1", "--format=%cI", "--", str(dvc_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    when = done.stdout.strip() if done.returncode == 0 else ""
    return f"{when} (last commit of {dvc_file})" if when else f"{dvc_file} is not committed yet"


def read_text(path: Path) -> str:
    """The human-owned card text; it must say something."""
    if not path.exists():
        raise PipelineError(
            f"{path} does not exist: write the model's intended use, out-of-scope use and "
            "known limitations there (paths.card_text in params.yaml)"
        )
    text = path.read_text()
    if not text.strip():
        raise PipelineError(f"{path} is empty: write the model's intended and out-of-scope use")
    return text


def main(argv: list[str] | None = None) -> int:
    """Gather the facts, render the card and write it."""
    names = (
        "raw",
        "schema",
        "data-dvc",
        "predictions",
        "metrics",
        "plots",
        "registry",
        "model",
        "lock",
        "text",
        "fairness",
        "out",
    )
    args = path_arguments(__doc__.splitlines()[0], names, argv)
    card = load_section("card", CardParams)
    evaluate = load_section("evaluate", EvaluateParams)
    register = load_section("register", RegisterParams)
    schema = load_schema(args.schema)
    segment_metric_names(schema.target.task, card.segment_metrics)  # a typo fails first
    text = read_text(args.text)
    document = yaml.safe_load(DEFAULT_PARAMS.read_text())
    params = {k: document[k] for k in ("featurize", "train", "evaluate", "card") if k in document}

    segment_columns = list(evaluate.segments)
    meta = json.loads((args.model / "meta.json").read_text())
    kind = str(meta["kind"])
    raw = read_raw(args.raw)[[schema.id, schema.target.column, *segment_columns]]
    facts = card_facts(
        name=register.model_name,
        schema=schema,
        raw=raw,
        predictions=pd.read_csv(args.predictions),
        metrics=json.loads(args.metrics.read_text()),
        calibration=json.loads((args.plots / "calibration.json").read_text()),
        registry=json.loads(args.registry.read_text()),
        lock=yaml.safe_load(args.lock.read_text()) if args.lock.exists() else {},
        params=params,
        segment_columns=segment_columns,
        card=card,
        data_md5=data_hash(args.data_dvc),
        snapshot=snapshot_time(args.data_dvc),
        dataset=args.raw.stem,
        library=LIBRARIES.get(kind, kind),
        text_path=str(args.text),
        interval=meta.get("interval"),
    )
    value = load_optional("value", ValueParams)
    facts["decisions"] = {
        "metrics": json.loads(args.metrics.read_text()),
        "currency": value.currency if value else None,
        "unit": value.unit if value else None,
        "threshold": meta.get("decision", {}).get("threshold"),
        "fairness": json.loads(args.fairness.read_text()) if args.fairness.exists() else {},
    }
    rendered = render_card(facts, text)
    write_atomically(args.out, lambda p: p.write_text(rendered))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_stage(main)
