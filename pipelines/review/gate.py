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

The metrics, and how each is computed for all resamples at once, are the registry's
(:mod:`pipelines.core.metrics`). Value per 1,000 rows (``value_per_1000``) is gated like them,
from each row's gain under the PR's value model (:mod:`pipelines.core.value`) at each model's own
decisions: a resample's value is the mean gain of the rows it drew, times 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines.core.metrics import METRICS, VALUE, Predictions, interval
from pipelines.params import FairnessParams, GateParams, MetricRule

Verdict = Literal["improved", "unchanged", "regressed", "inconclusive", "new", "invalid"]
# Each row's gain under the value model, for a side's predictions (in their row order)
Gains = Callable[[Predictions], np.ndarray]
# Resamples are processed in blocks of at most this many (resample, row) cells, so memory stays
# bounded (~100 MB) whatever the size of the test set.
BLOCK_CELLS = 4_000_000


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
    gains: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of PR - BASE for each metric.

    Args:
        base: BASE's predictions.
        pr: The PR's predictions; with ``paired``, the same ids in the same order as ``base``.
        names: Metrics to compute (of the predictions' task in :data:`METRICS`).
        resamples: Number of bootstrap resamples.
        seed: Seed of the random generator (same seed, same intervals).
        paired: Draw the same rows for both sides; otherwise draw each side independently.
        gains: Each row's gain for BASE and for the PR, when ``names`` holds ``value_per_1000``.

    Returns:
        For each metric, ``resamples`` differences PR - BASE (NaN where a resample leaves a
        metric undefined, e.g. AUC with a single class, or where a probability is NaN).
    """
    rng = np.random.default_rng(seed)
    base_rows, pr_rows = base.rows(), pr.rows()
    registry = METRICS[pr.task]
    out = {name: np.empty(resamples) for name in names}
    if base.problem() or pr.problem():
        return {name: np.full(resamples, np.nan) for name in names}
    block = max(1, BLOCK_CELLS // max(len(base), len(pr)))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        counts = _counts(rng, len(base), size)
        pr_counts = counts if paired else _counts(rng, len(pr), size)
        for name in names:
            if name == VALUE:
                out[name][start : start + size] = _value_of(pr_counts, gains, 1) - _value_of(
                    counts, gains, 0
                )
                continue
            metric = registry[name].weighted
            out[name][start : start + size] = metric(pr_rows, pr_counts[:, pr_rows.order]) - metric(
                base_rows, counts[:, base_rows.order]
            )
    return out


def _value_of(
    counts: np.ndarray, gains: tuple[np.ndarray, np.ndarray] | None, side: int
) -> np.ndarray:
    """Value per 1,000 rows of each resample: the mean gain of the rows drawn, times 1,000."""
    if gains is None:
        return np.full(len(counts), np.nan)
    return counts.dot(gains[side]) / counts.sum(axis=1) * 1000.0


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


def with_value(side: Side, gains_of: Gains | None) -> tuple[Side, np.ndarray | None]:
    """The side with its value per 1,000 rows recomputed under the PR's value model.

    BASE's metrics file says its value under BASE's value model; both sides are judged by the
    PR's. Without a value model the value is missing (a gated value then fails the gate).
    """
    if gains_of is None:
        return Side(side.predictions, {**side.metrics, VALUE: None}), None
    gains = gains_of(side.predictions)
    worth = float(np.mean(gains) * 1000.0) if len(gains) else math.nan
    return Side(side.predictions, {**side.metrics, VALUE: worth}), gains


def fairness_failures(audit: dict[str, Any], params: FairnessParams) -> list[str]:
    """What breaks a bound of ``fairness.max_gap`` in a model's ``eval/fairness.json``.

    A gap fails when its whole interval lies above its bound (wider than allowed beyond the test
    rows' noise); a sensitive column missing from the file fails too (the outputs are stale).
    """
    failures = []
    for column in params.sensitive:
        if column not in audit:
            failures.append(f"fairness: eval/fairness.json has no audit of {column}: run dvc repro")
            continue
        for gap, bound in params.max_gap.items():
            found = audit[column].get(gap)
            if not found or found.get("low") is None:
                continue  # fewer than two judged groups, or another task's gap
            if found["low"] > bound:
                failures.append(
                    f"fairness: {gap} of {column} is {found['value']:.3f} (interval "
                    f"{found['low']:.3f} to {found['high']:.3f}), wholly above its bound {bound}"
                )
    return failures


def compare(
    base: Side | None,
    pr: Side,
    params: GateParams,
    *,
    new_holdout: bool = False,
    gains_of: Gains | None = None,
) -> GateResult:
    """Gate the PR's model against BASE's (``None``: BASE has no model yet).

    Point estimates come from each side's metrics file; intervals from the bootstrap over the
    predictions. Every failure is listed, each naming its metric. ``new_holdout``: BASE's side
    holds its model's predictions on the PR's test rows (the mode says so when they pair).
    ``gains_of``: each row's gain under the PR's value model, for ``value_per_1000``.
    """
    names = list(params.metrics)
    pr_gains = base_gains = None
    if VALUE in names:
        pr, pr_gains = with_value(pr, gains_of)
        if base is not None:
            base, base_gains = with_value(base, gains_of)
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
        gains = None
        if base_gains is not None and pr_gains is not None and gains_of is not None:
            gains = (base_gains, gains_of(aligned) if aligned is not None else pr_gains)
        differences = bootstrap_differences(
            base.predictions,
            aligned if aligned is not None else pr.predictions,
            names,
            resamples=params.resamples,
            seed=params.seed,
            paired=aligned is not None,
            gains=gains,
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
