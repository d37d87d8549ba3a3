"""The comparison of served rows with the model's reference profile: drift and quality.

Each feature's served values and the model's scores are counted into the reference's fixed bins
(:mod:`pipelines.core.profile`) and compared with its fractions by PSI and, for numeric
features, a binned KS distance. A feature (or the score) drifts when its PSI exceeds
``psi_threshold(N, M, degrees_of_freedom(p), alpha, monitor.psi_floor)`` with ``alpha``
``per_test_rate(monitor.false_alarm_rate, features)``, the rule the Prometheus alerts evaluate,
so ``make monitor`` and the alerts agree on the same rows.
Quality is estimated from the scores (:mod:`pipelines.monitoring.quality`) and, given late
labels, measured. Rows without a served score are scored with the current model, after the
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
    psi,
    psi_threshold,
)
from pipelines.core.model import load_model
from pipelines.core.profile import Distribution, Profile
from pipelines.monitoring import quality
from pipelines.monitoring.served import (
    MonitorError,
    Served,
    join_labels,
    read_labels,
    read_served,
    unused_labels,
)
from pipelines.params import EvaluateParams, GateParams, MonitorParams, Paths, load_section
from pipelines.schema import Schema, load_schema
from pipelines.serving import batch as scorer

SCORE = "score"  # the model's score, in the report beside the features


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
        psi=psi(served, reference.fractions),
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
    """Metrics of the served rows that have late labels."""

    matched: int
    unmatched: int
    unused: int
    metrics: dict[str, float]
    bounds: dict[str, dict[str, Any]]


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
    estimated: dict[str, float]
    test_metrics: dict[str, Any]
    test_estimated: dict[str, float] | None
    realised: Realised | None

    @property
    def drifting(self) -> list[Drift]:
        """The drifting features, then the score when it drifts, largest PSI/threshold first."""
        found = sorted((d for d in self.features if d.drift), key=lambda d: -d.ratio)
        return [*found, self.score] if self.score.drift else found

    @property
    def exit_code(self) -> int:
        """0 no drift, 1 drift, 2 too few rows for a verdict."""
        if self.rows < self.params.min_rows:
            return 2
        return 1 if self.drifting else 0


def score_unscored(served: Served, schema: Schema, model_dir: Path) -> int:
    """Score the rows that carry no served score with the current model, in place.

    Raises:
        MonitorError: Those rows break the schema (one line per broken rule).
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
        raise MonitorError(
            f"no model at {model_dir} to score rows without a 'probability' column: "
            "run `make run` (or `dvc pull`)"
        )
    served.probability[unscored] = scorer.probabilities(frame, schema, load_model(model_dir))
    return int(unscored.sum())


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


def _test_side(paths: Paths, threshold: float) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The test metrics file and the estimate on the test rows' scores, where they exist."""
    metrics = json.loads(paths.metrics.read_text()) if paths.metrics.exists() else {}
    if not paths.predictions.exists():
        return metrics, None
    p = pd.read_csv(paths.predictions, usecols=["probability"])["probability"].to_numpy()
    return metrics, quality.expected_quality(p, threshold)


def build(rows: Path, labels: Path | None, paths: Paths, params_file: Path) -> Monitor:
    """Read, score, compare and measure; see the module's docstring.

    Raises:
        MonitorError: Could not compare (no profile, unreadable rows, missing columns, rows that
            break the schema and need scoring, bad labels).
    """
    params = load_section("monitor", MonitorParams, params_file)
    threshold = load_section("evaluate", EvaluateParams, params_file).threshold
    schema = load_schema(paths.schema_)
    profile = read_profile(paths.reference, schema)
    served = read_served(rows, schema)
    label_of = read_labels(labels, schema) if labels is not None else None
    scored = score_unscored(served, schema, paths.model)
    alpha = per_test_rate(params.false_alarm_rate, len(schema.features))
    features = [
        measure(name, profile.features[name], served.frame[name], params, alpha)
        for name in schema.features
    ]
    p = served.probability
    realised = None
    if label_of is not None:
        matched, y = join_labels(served.ids, label_of)
        if matched.size == 0:
            raise MonitorError(
                f"LABELS {labels}: none of its {len(label_of):,} ids names a served row (ids "
                "come from the request log's 'id' or the table's "
                f"{schema.id!r} column): check that the labels belong to these rows"
            )
        metrics = quality.realised_quality(y, p[matched], threshold)
        gate = load_section("gate", GateParams, params_file)
        realised = Realised(
            matched=int(matched.size),
            unmatched=len(served) - int(matched.size),
            unused=unused_labels(served.ids, label_of),
            metrics=metrics,
            bounds=quality.bounds(metrics, gate.metrics),
        )
    test_metrics, test_estimated = _test_side(paths, threshold)
    return Monitor(
        rows=len(served),
        files=served.files,
        scored=scored,
        features=features,
        score=measure(SCORE, profile.score, p, params, alpha),
        params=params,
        threshold=threshold,
        estimated=quality.expected_quality(p, threshold),
        test_metrics=test_metrics,
        test_estimated=test_estimated,
        realised=realised,
    )
