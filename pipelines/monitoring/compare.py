"""The comparison of served rows with the model's reference profile: drift and quality.

Each feature's served values and the model's scores are counted into the reference's fixed bins
(:mod:`pipelines.core.profile`) and compared with its fractions by PSI and, for numeric
features, a binned KS distance. A feature (or the score) drifts when its PSI
(:func:`pipelines.core.drift.psi_of_counts`: both sides smoothed by half a row per bin) exceeds
``psi_threshold(N, M, degrees_of_freedom(p), alpha, monitor.psi_floor)`` with ``alpha``
``per_test_rate(monitor.false_alarm_rate, features)``, the rule the Prometheus alerts evaluate,
so ``make monitor`` and the alerts agree on the same rows.
The score is the model's monitored score of its task (:func:`pipelines.core.model.monitored_score`:
a probability, the top probability, a prediction), the number the profile stage binned; a
multiclass model's predicted class (the most probable one) is compared with the test rows' class
shares too, a third subject of the same test.
Quality is estimated from the outputs where they say something (:mod:`pipelines.monitoring.quality`:
a binary or multiclass model's calibrated probabilities, not a regression's prediction) and, given
late labels, measured. Rows without a served output are scored with the current model, after the
batch scorer's schema checks (:mod:`pipelines.serving.batch`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.drift import (
    Binning,
    degrees_of_freedom,
    fractions,
    ks,
    ks_threshold,
    per_test_rate,
    psi_of_counts,
    psi_threshold,
)
from pipelines.core.metrics import PROBABILITY as PROBABILITY_OF
from pipelines.core.metrics import Task
from pipelines.core.model import load_model, monitored_class, monitored_score, read_threshold
from pipelines.core.profile import Distribution, Profile, class_names
from pipelines.monitoring import outcomes, quality
from pipelines.monitoring.served import (
    MonitorError,
    Served,
    join_labels,
    output_columns,
    read_labels,
    read_served,
    unused_labels,
)
from pipelines.params import (
    FairnessParams,
    GateParams,
    MonitorParams,
    Paths,
    ValueParams,
    load_optional,
    load_section,
)
from pipelines.schema import Schema, load_schema
from pipelines.serving import batch as scorer

SCORE = "score"  # the model's score, in the report beside the features
PREDICTED = "predicted class"  # a multiclass model's predicted class, beside the score


@dataclass(frozen=True)
class Drift:
    """One feature's (or the score's) served fractions against the reference."""

    name: str
    distribution: Distribution
    served: np.ndarray  # fractions per bin
    rows: int
    psi: float
    threshold: float
    ks: float  # NaN for a categorical feature
    ks_threshold: float | None

    @property
    def drift(self) -> bool:
        """Whether the PSI crosses its threshold."""
        return self.psi > self.threshold

    @property
    def ratio(self) -> float:
        """PSI over its threshold: above 1 is drift."""
        return self.psi / self.threshold if self.threshold > 0 else math.inf

    @property
    def kind(self) -> str:
        """Numeric or categorical."""
        return self.distribution.binning.kind


def bin_counts(binning: Binning, values: Any) -> np.ndarray:
    """How many values fall in each bin: :meth:`Binning.counts`, faster for categories.

    A categorical column of a million rows holds a handful of distinct values: they are
    tallied first (hashing in C) and only the distinct values go through the binning, so the
    bins are exactly :meth:`Binning.assign`'s.
    """
    if binning.kind != "categorical":
        return binning.counts(values)
    tally = pd.Series(values).value_counts(dropna=False, sort=False)
    index = binning.assign(tally.index.to_numpy(dtype=object))
    weights = tally.to_numpy(dtype=np.float64)
    return np.bincount(index, weights=weights, minlength=len(binning.labels)).astype(np.int64)


def measure(
    name: str, reference: Distribution, values: Any, params: MonitorParams, alpha: float
) -> Drift:
    """PSI, KS and their thresholds of served ``values`` against one reference distribution.

    ``alpha`` is the false-alarm rate of this one test (:func:`per_test_rate`).
    """
    binning = reference.binning
    counts = bin_counts(binning, values)
    served = fractions(counts)
    rows, m = int(counts.sum()), reference.rows
    numeric = binning.kind == "numeric"
    return Drift(
        name=name,
        distribution=reference,
        served=served,
        rows=rows,
        psi=psi_of_counts(counts, reference.fractions, m),
        threshold=psi_threshold(
            rows,
            m,
            degrees_of_freedom(reference.fractions),
            alpha,
            params.psi_floor,
        ),
        ks=ks(served, reference.fractions, binning.ordered),
        ks_threshold=ks_threshold(rows, m, alpha) if numeric else None,
    )


@dataclass(frozen=True)
class Realised:
    """Metrics of the served rows that have late labels.

    ``filled``: a regression's labelled rows whose interval was not served and is taken as the
    prediction -/+ the model's ``half_width``, as the service answers it.
    """

    matched: int
    unmatched: int
    unused: int
    metrics: dict[str, float]
    bounds: dict[str, dict[str, Any]]
    filled: int = 0
    half_width: float | None = None


@dataclass(frozen=True)
class Monitor:
    """Everything the report shows."""

    rows: int
    files: tuple[Path, ...]
    scored: int  # rows scored here with the current model
    features: list[Drift]
    score: Drift
    params: MonitorParams
    threshold: float
    estimated: dict[str, float] | None  # None: the task's outputs estimate nothing
    test_metrics: dict[str, Any]
    test_estimated: dict[str, float] | None
    realised: Realised | None
    task: Task = "binary"
    classes: tuple[Any, ...] = ()
    predicted: Drift | None = None  # a multiclass model's predicted class
    value: outcomes.Value | None = None  # with late labels and a value model
    fairness: outcomes.Fairness | None = None  # with late labels and fairness groups

    @property
    def outputs(self) -> list[Drift]:
        """What is watched of the model's output: the score, and a multiclass model's class."""
        return [self.score] if self.predicted is None else [self.score, self.predicted]

    @property
    def drifting(self) -> list[Drift]:
        """The drifting features, then the outputs that drift, largest PSI/threshold first."""
        found = sorted((d for d in self.features if d.drift), key=lambda d: -d.ratio)
        return [*found, *(d for d in self.outputs if d.drift)]

    @property
    def exit_code(self) -> int:
        """0 no drift, 1 drift, 2 too few rows for a verdict."""
        if self.rows < self.params.min_rows:
            return 2
        return 1 if self.drifting else 0


def score_unscored(served: Served, schema: Schema, model_dir: Path) -> int:
    """Give the rows that carry no served output the current model's, in place.

    Raises:
        MonitorError: Those rows break the schema (one line per broken rule), or there is no
            model to score them with.
    """
    unscored = served.unscored
    if not unscored.any():
        return 0
    frame = served.frame[unscored] if not unscored.all() else served.frame
    problems = scorer.check_table(frame, schema)
    if problems:
        source = ", ".join(str(f) for f in served.files[:3]) + (
            " ..." if len(served.files) > 3 else ""
        )
        raise MonitorError(scorer.describe(problems, len(frame), source))

    if not Path(model_dir).exists():
        columns = output_columns(schema.target)
        named = (
            f"'{PROBABILITY_OF}<class>' columns" if len(columns) > 1 else f"a {columns[0]!r} column"
        )
        raise MonitorError(
            f"no model at {model_dir} to score rows without {named}: run `make run` (or `dvc pull`)"
        )
    served.output[unscored] = scorer.outputs(frame, schema, load_model(model_dir))
    return int(unscored.sum())


def intervals(served: Served, rows: np.ndarray, model_dir: Path) -> tuple[np.ndarray, int, float]:
    """A regression's intervals of some served rows; unserved ones the prediction -/+ half-width.

    Returns:
        Rows x (low, high), how many were not served, and the model's half-width (NaN when
        every interval was served).

    Raises:
        MonitorError: Intervals to fill and no model to take the half-width from.
    """
    given = (
        served.interval[rows] if served.interval is not None else np.full((len(rows), 2), np.nan)
    )
    missing = np.isnan(given).any(axis=1)
    if not missing.any():
        return given, 0, math.nan
    if not Path(model_dir).exists():
        raise MonitorError(
            f"no model at {model_dir} for the interval of rows served without one: run "
            "`make run` (or `dvc pull`), or give the rows' 'low' and 'high' columns"
        )
    width = load_model(model_dir).half_width()
    prediction = served.output[rows][missing]
    filled = given.copy()
    filled[missing] = np.column_stack([prediction - width, prediction + width])
    return filled, int(missing.sum()), width


def read_profile(path: Path, schema: Schema) -> Profile:
    """The reference profile, with every feature of the schema.

    Raises:
        MonitorError: No profile, or one of another schema.
    """
    if not Path(path).exists():
        raise MonitorError(
            f"no reference profile at {path}: run `make run` (the profile stage of `dvc repro`) "
            "or `dvc pull` to get the model's reference"
        )
    profile = Profile.read(path)
    absent = [name for name in schema.features if name not in profile.features]
    if absent:
        raise MonitorError(
            f"the reference profile {path} has no bins for {', '.join(absent[:5])}: it was "
            "written for another schema; re-run `dvc repro`"
        )
    return profile


def _test_side(
    paths: Paths, schema: Schema, threshold: float
) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The test metrics file and the estimate on the test rows' outputs, where they exist."""
    metrics = json.loads(paths.metrics.read_text()) if paths.metrics.exists() else {}
    target = schema.target
    if not paths.predictions.exists() or target.task == "regression":
        return metrics, None
    names = (
        [f"{PROBABILITY_OF}{c}" for c in target.labels]
        if target.task == "multiclass"
        else ["probability"]
    )
    output = pd.read_csv(paths.predictions, usecols=names)[names].to_numpy(dtype=np.float64)
    output = output if target.task == "multiclass" else output[:, 0]
    return metrics, quality.estimated_quality(target.task, output, threshold, target.labels)


def realise(
    served: Served,
    labels: pd.Series,
    where: Path,
    *,
    schema: Schema,
    threshold: float,
    rules: dict[str, Any],
    model_dir: Path,
    gain: np.ndarray | None = None,
) -> Realised:
    """The task's metrics of the served rows that have a late label, against the gate's bounds.

    Raises:
        MonitorError: No label names a served row (``where`` is the labels file).
    """
    matched, y = join_labels(served.ids, labels)
    if matched.size == 0:
        raise MonitorError(
            f"LABELS {where}: none of its {len(labels):,} ids names a served row (ids "
            "come from the request log's 'id' or the table's "
            f"{schema.id!r} column): check that the labels belong to these rows"
        )
    target = schema.target
    interval, filled, width = None, 0, None
    if target.task == "regression":
        interval, filled, half = intervals(served, matched, model_dir)
        width = None if math.isnan(half) else half
    predictions = quality.served_predictions(
        target.task,
        y,
        served.output[matched],
        threshold,
        classes=target.labels,
        interval=interval,
        gain=gain,
    )
    metrics = quality.realised_quality(predictions, threshold)
    return Realised(
        matched=int(matched.size),
        unmatched=len(served) - int(matched.size),
        unused=unused_labels(served.ids, labels),
        metrics=metrics,
        bounds=quality.bounds(metrics, quality.gated(target.task, rules)),
        filled=filled,
        half_width=width,
    )


def judge_outcomes(
    served: Served,
    labels: pd.Series,
    paths: Paths,
    params_file: Path,
    *,
    schema: Schema,
    threshold: float,
    gain: np.ndarray | None,
    test_value: float | None,
) -> tuple[outcomes.Value | None, outcomes.Fairness | None]:
    """Realised value and fairness of the labelled served rows, where params ask for them."""
    value_params = load_optional("value", ValueParams, params_file)
    fairness_params = load_optional("fairness", FairnessParams, params_file)
    if value_params is None and fairness_params is None:
        return None, None
    matched, y = join_labels(served.ids, labels)
    output = served.output[matched]
    decided = outcomes.decisions(schema.target.task, output, threshold, gain)
    value: outcomes.Value | None = None
    fairness: outcomes.Fairness | None = None
    if value_params is not None:
        value = outcomes.realised_value(
            value_params,
            schema,
            served.frame,
            matched,
            label=y,
            output=output,
            decided=decided,
            test=test_value,
        )
    if fairness_params is not None:
        fairness = outcomes.realised_fairness(
            fairness_params,
            schema,
            served.frame,
            matched,
            label=y,
            decided=decided,
            test_file=paths.fairness,
        )
    return value, fairness


def build(rows: Path, labels: Path | None, paths: Paths, params_file: Path) -> Monitor:
    """Read, score, compare and measure; see the module's docstring.

    Raises:
        MonitorError: Could not compare (no profile, unreadable rows, missing columns, rows that
            break the schema and need scoring, bad labels).
    """
    params = load_section("monitor", MonitorParams, params_file)
    threshold = read_threshold(paths.model)
    schema = load_schema(paths.schema_)
    target = schema.target
    profile = read_profile(paths.reference, schema)
    served = read_served(rows, schema)
    label_of = read_labels(labels, schema) if labels is not None else None
    scored = score_unscored(served, schema, paths.model)
    classes = monitored_class(served.output, target.task)
    watched = profile.predicted if classes is not None else None
    outputs = 1 if watched is None else 2
    alpha = per_test_rate(params.false_alarm_rate, len(schema.features), outputs)
    features = [
        measure(name, profile.features[name], served.frame[name], params, alpha)
        for name in schema.features
    ]
    gain = outcomes.decision_gain(paths.model) if target.task == "multiclass" else None
    test_metrics, test_estimated = _test_side(paths, schema, threshold)
    realised: Realised | None = None
    value: outcomes.Value | None = None
    fairness: outcomes.Fairness | None = None
    if label_of is not None and labels is not None:
        gate = load_section("gate", GateParams, params_file)
        realised = realise(
            served,
            label_of,
            labels,
            schema=schema,
            threshold=threshold,
            rules=gate.metrics,
            model_dir=paths.model,
            gain=gain,
        )
        value, fairness = judge_outcomes(
            served,
            label_of,
            paths,
            params_file,
            schema=schema,
            threshold=threshold,
            gain=gain,
            test_value=test_metrics.get("value_per_1000"),
        )
    score = monitored_score(served.output, target.task)
    return Monitor(
        rows=len(served),
        files=served.files,
        scored=scored,
        features=features,
        score=measure(SCORE, profile.score, score, params, alpha),
        params=params,
        threshold=threshold,
        estimated=quality.estimated_quality(target.task, served.output, threshold, target.labels),
        test_metrics=test_metrics,
        test_estimated=test_estimated,
        realised=realised,
        task=target.task,
        classes=tuple(target.labels),
        predicted=(
            None
            if watched is None or classes is None
            else measure(PREDICTED, watched, class_names(classes, target.labels), params, alpha)
        ),
        value=value,
        fairness=fairness,
    )
