"""The metric gate: is the pull request's model worse than the base branch's, and how sure are we?

Both models' predictions on the test rows (``eval/predictions.csv``) are resampled together: a
**paired bootstrap** draws the same rows for both (joined by id), so the noise of which rows
happen to be in the test set cancels out and only the difference between the models remains. For
each gated metric it gives a confidence interval of the difference PR - BASE, turned into an
*improvement* (PR - BASE for higher-is-better metrics, BASE - PR for lower-is-better ones, so that
positive is always better). With that interval ``[low, high]`` and the metric's ``tolerance``:

- ``regressed``: the whole interval is worse than the tolerance (``high < -tolerance``): the PR
  is worse by more than we accept, and not by chance.
- ``improved``: the whole interval is better than nothing (``low > 0``).
- ``unchanged``: the interval lies within the tolerance (``-tolerance <= low`` and
  ``high <= tolerance``): any difference is too small to matter.
- ``inconclusive``: anything else; the test set cannot tell. This does not fail the gate.
- ``new``: BASE has no model yet (the first model): only the floor or ceiling applies.
- ``invalid``: the metric is missing or NaN on either side, or its interval is undefined.

The gate fails when any metric is ``regressed`` or ``invalid`` (it fails closed), or when the PR's
value breaks the metric's absolute floor (higher is better) or ceiling (lower is better).
When the data changed, the report scores BASE's model on the PR's test rows
(:mod:`pipelines.review.holdout`) and the bootstrap is paired on that new holdout. When the test
rows still differ (another split or other data: different ids or labels, and BASE's model could
not score the PR's rows), the two sides are resampled independently instead (an **unpaired
bootstrap**), which gives wider intervals.

Metrics are computed for all resamples at once with NumPy: each resample is a row of counts (how
often each test row was drawn), and every metric is a weighted sum over rows sorted once by score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipelines.params import Section

Better = Literal["higher", "lower"]
Verdict = Literal["improved", "unchanged", "regressed", "inconclusive", "new", "invalid"]
COLUMNS = ("id", "label", "probability", "predicted")
# Resamples are processed in blocks of at most this many (resample, row) cells, so memory stays
# bounded (~100 MB) whatever the size of the test set.
BLOCK_CELLS = 4_000_000


class MetricRule(Section):
    """How one metric is gated."""

    better: Better
    floor: float | None = None
    ceiling: float | None = None
    tolerance: float = Field(ge=0)

    @model_validator(mode="after")
    def _bound_matches_direction(self) -> MetricRule:
        if self.better == "higher" and self.ceiling is not None:
            raise ValueError("a higher-is-better metric takes a floor, not a ceiling")
        if self.better == "lower" and self.floor is not None:
            raise ValueError("a lower-is-better metric takes a ceiling, not a floor")
        return self

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.better == "higher" else -1

    @property
    def bound(self) -> float | None:
        """The floor or the ceiling, whichever applies."""
        return self.floor if self.better == "higher" else self.ceiling

    def breaks_bound(self, value: float) -> bool:
        """Whether ``value`` is below the floor or above the ceiling."""
        if self.bound is None:
            return False
        return value < self.bound if self.better == "higher" else value > self.bound


class GateParams(Section):
    """The ``gate:`` section of params.yaml: rules per metric and bootstrap settings."""

    resamples: int = Field(ge=200)
    seed: int
    confidence: float = Field(gt=0.5, lt=1)
    metrics: dict[str, MetricRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_metrics(self) -> GateParams:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}: the gate knows {sorted(METRICS)}")
        return self


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on the test rows (the columns of ``eval/predictions.csv``)."""

    ids: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Predictions:
        """Take the predictions out of a frame with the columns id, label, probability, predicted.

        Raises:
            ValueError: A column is missing or the table is empty.
        """
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing or frame.empty:
            raise ValueError(f"expected columns {list(COLUMNS)} and rows; missing {missing}")
        return cls(
            ids=frame["id"].to_numpy(),
            label=frame["label"].to_numpy(dtype=np.int8),
            probability=frame["probability"].to_numpy(dtype=np.float64),
            predicted=frame["predicted"].to_numpy(dtype=np.int8),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def problem(self) -> str | None:
        """What makes these predictions unusable (NaN or out-of-range values), if anything."""
        bad = ~np.isfinite(self.probability) | (self.probability < 0) | (self.probability > 1)
        if bad.any():
            return f"{int(bad.sum())} probabilities are NaN or outside [0, 1]"
        if not np.isin(self.label, (0, 1)).all() or not np.isin(self.predicted, (0, 1)).all():
            return "labels and predicted labels must be 0 or 1"
        return None

    def take(self, rows: np.ndarray) -> Predictions:
        """The predictions of the given row positions, in that order."""
        return Predictions(
            self.ids[rows], self.label[rows], self.probability[rows], self.predicted[rows]
        )


@dataclass(frozen=True)
class Side:
    """What the gate reads of one model: its predictions and its metrics file."""

    predictions: Predictions
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class MetricResult:
    """The comparison of one gated metric."""

    name: str
    rule: MetricRule
    base: float | None
    pr: float | None
    low: float | None = None
    high: float | None = None
    verdict: Verdict = "invalid"
    bound_broken: bool = False

    @property
    def delta(self) -> float | None:
        """PR - BASE."""
        return None if self.base is None or self.pr is None else self.pr - self.base


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and everything it is based on."""

    passed: bool
    mode: Literal["paired", "paired on new holdout", "unpaired", "first model"]
    rows: tuple[int, int | None]
    metrics: list[MetricResult]
    failures: list[str]
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95


# --- metrics of many resamples at once ----------------------------------------------------------
# Each takes the rows sorted by descending probability and a (resamples, rows) matrix of counts,
# and returns one value per resample. With all counts 1 they equal scikit-learn's metrics.

MetricFunction = Callable[["Sorted", np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Sorted:
    """Test rows sorted once by descending probability, with the groups of tied scores."""

    order: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray
    starts: np.ndarray  # first position of each group of equal probabilities

    @classmethod
    def of(cls, predictions: Predictions) -> Sorted:
        """Sort ``predictions`` by descending probability (NaN last)."""
        order = np.argsort(-predictions.probability, kind="stable")
        probability = predictions.probability[order]
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = probability[1:] != probability[:-1]
        return cls(
            order=order,
            label=predictions.label[order].astype(np.float64),
            probability=probability,
            predicted=predictions.predicted[order].astype(np.float64),
            starts=np.flatnonzero(new_group),
        )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _class_weights(rows: Sorted, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight of positives and of negatives in each group of tied scores, per resample."""
    positive = np.add.reduceat(counts * rows.label, rows.starts, axis=1)
    negative = np.add.reduceat(counts * (1.0 - rows.label), rows.starts, axis=1)
    return positive, negative


def roc_auc(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    positive, negative = _class_weights(rows, counts)
    # negatives scored strictly lower than each group: all negatives minus those up to it
    total_negative = negative.sum(axis=1, keepdims=True)
    lower = total_negative - np.cumsum(negative, axis=1)
    pairs = (positive * (lower + 0.5 * negative)).sum(axis=1)
    total = positive.sum(axis=1) * total_negative[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def pr_auc(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Average precision: precision at each threshold weighted by the recall it adds."""
    positive, negative = _class_weights(rows, counts)
    true_positive = np.cumsum(positive, axis=1)
    precision = _divide(true_positive, true_positive + np.cumsum(negative, axis=1))
    total = positive.sum(axis=1)
    has_positive = total > 0
    average = (positive * precision).sum(axis=1) / np.where(has_positive, total, 1.0)
    has_negative = negative.sum(axis=1) > 0
    return np.where(has_positive & has_negative, average, np.nan)


def log_loss(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood (probabilities clipped as scikit-learn clips them)."""
    eps = np.finfo(np.float64).eps
    p = np.clip(rows.probability, eps, 1 - eps)
    loss = -(rows.label * np.log(p) + (1 - rows.label) * np.log1p(-p))
    return np.asarray((counts @ loss) / counts.sum(axis=1))


def brier(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Mean squared difference between probability and label."""
    return np.asarray((counts @ (rows.probability - rows.label) ** 2) / counts.sum(axis=1))


def _confusion(rows: Sorted, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted true positives, false positives, false negatives and row totals."""
    tp = counts @ (rows.predicted * rows.label)
    fp = counts @ (rows.predicted * (1 - rows.label))
    fn = counts @ ((1 - rows.predicted) * rows.label)
    return tp, fp, fn, counts.sum(axis=1).astype(np.float64)


def accuracy(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of rows whose predicted label is right."""
    _, fp, fn, n = _confusion(rows, counts)
    return np.asarray((n - fp - fn) / n)


def precision(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of predicted positives that are positive."""
    tp, fp, _, _ = _confusion(rows, counts)
    return _divide(tp, tp + fp)


def recall(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Share of positives predicted positive."""
    tp, _, fn, _ = _confusion(rows, counts)
    return _divide(tp, tp + fn)


def f1(rows: Sorted, counts: np.ndarray) -> np.ndarray:
    """Harmonic mean of precision and recall at the decision threshold."""
    tp, fp, fn, _ = _confusion(rows, counts)
    return _divide(2 * tp, 2 * tp + fp + fn)


METRICS: dict[str, MetricFunction] = {
    "roc_auc": roc_auc,
    "pr_auc": pr_auc,
    "log_loss": log_loss,
    "brier": brier,
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
}


def point_metrics(predictions: Predictions, names: list[str]) -> dict[str, float]:
    """The metrics of the predictions as they are (every row counted once)."""
    rows = Sorted.of(predictions)
    ones = np.ones((1, len(predictions)))
    return {name: float(METRICS[name](rows, ones)[0]) for name in names}


# --- the bootstrap ------------------------------------------------------------------------------


def _counts(rng: np.random.Generator, rows: int, resamples: int) -> np.ndarray:
    """``resamples`` bootstrap resamples of ``rows`` rows, as counts of each row per resample."""
    drawn = rng.integers(0, rows, size=(resamples, rows))
    offsets = (np.arange(resamples) * rows)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=resamples * rows)
    return counts.reshape(resamples, rows).astype(np.float64)


def bootstrap_differences(
    base: Predictions,
    pr: Predictions,
    names: list[str],
    *,
    resamples: int,
    seed: int,
    paired: bool,
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of PR - BASE for each metric.

    Args:
        base: BASE's predictions.
        pr: The PR's predictions; with ``paired``, the same ids in the same order as ``base``.
        names: Metrics to compute (keys of :data:`METRICS`).
        resamples: Number of bootstrap resamples.
        seed: Seed of the random generator (same seed, same intervals).
        paired: Draw the same rows for both sides; otherwise draw each side independently.

    Returns:
        For each metric, ``resamples`` differences PR - BASE (NaN where a resample leaves a
        metric undefined, e.g. AUC with a single class, or where a probability is NaN).
    """
    rng = np.random.default_rng(seed)
    base_rows, pr_rows = Sorted.of(base), Sorted.of(pr)
    out = {name: np.empty(resamples) for name in names}
    if base.problem() or pr.problem():
        return {name: np.full(resamples, np.nan) for name in names}
    block = max(1, BLOCK_CELLS // max(len(base), len(pr)))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        counts = _counts(rng, len(base), size)
        pr_counts = counts if paired else _counts(rng, len(pr), size)
        for name in names:
            metric = METRICS[name]
            out[name][start : start + size] = metric(pr_rows, pr_counts[:, pr_rows.order]) - metric(
                base_rows, counts[:, base_rows.order]
            )
    return out


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of ``samples``; NaN when any sample is NaN (fail closed)."""
    if not np.all(np.isfinite(samples)):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, rule: MetricRule) -> Verdict:
    """Classify the interval ``[low, high]`` of PR - BASE (see the module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "invalid"
    worst, best = sorted((rule.sign * low, rule.sign * high))
    if best < -rule.tolerance:
        return "regressed"
    if worst > 0:
        return "improved"
    if worst >= -rule.tolerance and best <= rule.tolerance:
        return "unchanged"
    return "inconclusive"


# --- the decision -------------------------------------------------------------------------------


def pair(base: Predictions, pr: Predictions) -> tuple[Predictions | None, str]:
    """The PR's predictions in BASE's row order, or None and why the rows cannot be paired."""
    if len(set(base.ids)) != len(base) or len(set(pr.ids)) != len(pr):
        return None, "an id appears twice in the predictions"
    position = pd.Index(pr.ids).get_indexer(base.ids)
    only_base = int((position < 0).sum())
    only_pr = len(pr) - (len(base) - only_base)
    if only_base or only_pr:
        return None, f"{only_base} test ids only in BASE and {only_pr} only in the PR"
    aligned = pr.take(position)
    relabelled = int((aligned.label != base.label).sum())
    if relabelled:
        return None, f"{relabelled} test rows have a different label in BASE and the PR"
    return aligned, ""


def _value(metrics: dict[str, float | None], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def judge(
    name: str,
    rule: MetricRule,
    base: float | None,
    pr: float | None,
    *,
    samples: np.ndarray | None,
    confidence: float,
) -> tuple[MetricResult, list[str]]:
    """Judge one metric from its point values and bootstrap differences (None: first model).

    Returns:
        The metric's result and the failures it causes, each naming the metric.
    """
    if pr is None or (samples is not None and base is None):
        side = "the PR" if pr is None else "BASE"
        return MetricResult(name, rule, base, pr), [f"{name} is missing or NaN in {side}'s metrics"]
    failures = []
    broken = rule.breaks_bound(pr)
    if broken:
        relation = "below the floor" if rule.better == "higher" else "above the ceiling"
        failures.append(f"{name} {_fmt(pr)} is {relation} {rule.bound}")
    if samples is None or base is None:
        return MetricResult(name, rule, None, pr, None, None, "new", broken), failures
    low, high = interval(samples, confidence)
    decided = verdict(low, high, rule)
    if decided == "regressed":
        failures.append(
            f"{name} regressed by {_fmt(pr - base)} ({confidence:.0%} interval {_fmt(low)} to "
            f"{_fmt(high)}; tolerance {rule.tolerance})"
        )
    elif decided == "invalid":
        failures.append(f"{name}: the bootstrap interval is undefined (NaN)")
    return MetricResult(name, rule, base, pr, low, high, decided, broken), failures


def compare(
    base: Side | None, pr: Side, params: GateParams, *, new_holdout: bool = False
) -> GateResult:
    """Gate the PR's model against BASE's (``None``: BASE has no model yet).

    Point estimates come from each side's metrics file; intervals from the bootstrap over the
    predictions. Every failure is listed, each naming its metric. ``new_holdout``: BASE's side
    holds its model's predictions on the PR's test rows (the mode says so when they pair).
    """
    names = list(params.metrics)
    failures: list[str] = []
    notes: list[str] = []
    mode: Literal["paired", "paired on new holdout", "unpaired", "first model"] = "first model"
    differences: dict[str, np.ndarray] = {}
    for label, side in (("the PR", pr), ("BASE", base)):
        problem = None if side is None else side.predictions.problem()
        if problem:
            failures.append(f"{label}'s predictions are unusable: {problem}")
    if base is not None:
        aligned, why = pair(base.predictions, pr.predictions)
        mode = "unpaired"
        if aligned is not None:
            mode = "paired on new holdout" if new_holdout else "paired"
        if aligned is None:
            notes.append(f"The test rows differ ({why}): the bootstrap is unpaired.")
        differences = bootstrap_differences(
            base.predictions,
            aligned if aligned is not None else pr.predictions,
            names,
            resamples=params.resamples,
            seed=params.seed,
            paired=aligned is not None,
        )
    results = []
    for name, rule in params.metrics.items():
        result, problems = judge(
            name,
            rule,
            None if base is None else _value(base.metrics, name),
            _value(pr.metrics, name),
            samples=differences.get(name),
            confidence=params.confidence,
        )
        results.append(result)
        failures += problems
    return GateResult(
        passed=not failures,
        mode=mode,
        rows=(len(pr.predictions), None if base is None else len(base.predictions)),
        metrics=results,
        failures=failures,
        notes=notes,
        confidence=params.confidence,
    )
