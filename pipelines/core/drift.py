"""The drift maths shared by the service's metrics, the Prometheus rules and ``make monitor``.

A feature's values are counted into fixed bins taken from the training rows (the reference
profile). Drift is measured on the bin fractions of served rows ``q`` against the reference's
``p``:

- **PSI** (population stability index), ``sum((q - p) * ln(q / p))`` with both fractions
  floored at ``EPSILON`` so an empty bin gives a large but finite term. PromQL computes the same
  with ``clamp_min``. The verdict's PSI (:func:`psi_of_counts`) first adds ``SMOOTHING`` (half a
  row) to the count of every bin the reference holds rows in, on both sides: a small reference
  bin that a quiet window leaves empty (a 3.6% missing-value bin in 200 rows, say) would
  otherwise add a term of ``p * ln(p / EPSILON)`` on its own, 0.21 for that bin, over the whole
  threshold. The alert rules write the same smoothing.
- **KS over bins**, the largest gap between the two cumulative fractions over the ordered value
  bins of a numeric feature (the missing bin comes last, so it counts through the final gap).

Bins are also merged until each expects ``BIN_ROWS`` rows in the smaller of a ``min_rows``
window and the reference (:func:`min_share`). Without drift, PSI is approximately
``(1/N + 1/M) * chi2(k - 1)`` for ``N`` served rows, ``M`` reference rows and ``k`` bins, so a
fixed PSI threshold pages on small windows. The threshold here is the ``1 - alpha`` quantile of
that distribution (``alpha`` the model's false-alarm rate split over its features and score,
:func:`per_test_rate`), never below a floor that keeps very large windows from alarming on
negligible shifts; the chi-square quantile is Wilson and Hilferty's approximation, which PromQL
can evaluate too, so the alert and the batch report agree exactly.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

MISSING = "(missing)"
OTHER = "(other)"
EPSILON = 1e-4  # fraction floor of an empty bin, here and in the PromQL rules
SMOOTHING = 0.5  # rows added to each bin the reference holds rows in, before PSI (both sides)
BIN_ROWS = 10  # rows a bin should expect in a min_rows window and in the reference


@dataclass(frozen=True)
class Binning:
    """The fixed bins of one feature (or of the score).

    Numeric: value bins ``(-inf, e1], (e1, e2], ..., (e_last, +inf)`` labelled ``"0"``,
    ``"1"``, ..., then ``MISSING``. Categorical: one bin per category of the schema, then
    ``OTHER`` (a value the schema does not list) and ``MISSING``.
    """

    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        """Bin labels, in order: what the metrics' ``bin`` label holds."""
        if self.kind == "numeric":
            return [*(str(i) for i in range(len(self.edges) + 1)), MISSING]
        return [*self.categories, OTHER, MISSING]

    @property
    def ordered(self) -> int:
        """How many leading bins have an order (the value bins of a numeric feature; else 0)."""
        return len(self.edges) + 1 if self.kind == "numeric" else 0

    def assign(self, values: Any) -> np.ndarray:
        """The bin index of each value (a sequence, Series or array), vectorised."""
        import pandas as pd

        if self.kind == "numeric":
            numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
            index = np.searchsorted(np.asarray(self.edges, dtype=np.float64), numbers, "left")
            return np.where(np.isnan(numbers), len(self.edges) + 1, index)
        series = pd.Series(values, dtype=object)
        lookup = {category: i for i, category in enumerate(self.categories)}
        other, missing = len(self.categories), len(self.categories) + 1
        found = series.map(lookup).to_numpy(dtype=np.float64, na_value=np.nan)
        result = np.where(np.isnan(found), other, found).astype(np.int64)
        return np.where(series.isna().to_numpy(), missing, result)

    def index_of(self, value: Any) -> int:
        """The bin index of one value (the service's per-record path: no numpy call)."""
        if value is None or value != value:  # noqa: PLR0124 - NaN is the one value unequal to itself
            return self._missing
        if self.kind == "numeric":
            return bisect_left(self.edges, value)
        return self._lookup.get(value, len(self.categories))

    @cached_property
    def _missing(self) -> int:
        return len(self.labels) - 1

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {category: i for i, category in enumerate(self.categories)}

    def counts(self, values: Any) -> np.ndarray:
        """How many values fall in each bin."""
        return np.bincount(self.assign(values), minlength=len(self.labels))


def quantile_edges(values: Any, bins: int) -> tuple[float, ...]:
    """Bin edges at the ``1/bins, ..., (bins-1)/bins`` quantiles of the non-missing values.

    Repeated quantiles collapse into one edge and an edge at the maximum is dropped (its bin
    would be empty). When a quantile falls on the maximum, the maximum holds a large share of
    the rows: the largest value below it becomes an edge, so that share keeps a bin of its own
    (a 0/1 column gets the single edge 0 even when nearly every row is 1).
    """
    numbers = np.asarray(values, dtype=np.float64)
    numbers = numbers[~np.isnan(numbers)]
    if numbers.size == 0:
        return ()
    top = numbers.max()
    quantiles = np.quantile(numbers, np.arange(1, bins) / bins, method="lower")
    edges = np.unique(quantiles)
    below = numbers[numbers < top]
    if edges[-1] == top and below.size:
        edges = np.unique(np.append(edges, below.max()))
    return tuple(float(edge) for edge in edges[edges < top])


def min_share(min_rows: int, reference_rows: int | None = None) -> float:
    """The smallest share a bin may hold: ``BIN_ROWS`` rows in windows and reference alike.

    ``BIN_ROWS`` rows in a ``min_rows`` window and in a reference of ``reference_rows`` (the
    training rows of a feature, the test rows of the score). Below that the chi-square law of PSI
    fails in the tail the threshold sits in: a table whose categories hold 1-3% of the rows alarmed
    four times as often as configured at 200 rows, and the score's ten bins over a 400-row table's
    88 test rows alarmed five times as often.
    """
    rows = min_rows if not reference_rows else min(min_rows, reference_rows)
    return BIN_ROWS / max(rows, 1)


def merged_edges(values: Any, edges: Sequence[float], share: float) -> tuple[float, ...]:
    """``edges`` with the value bins under ``share`` of all rows merged into a neighbour.

    The smallest bin goes first, into its smaller neighbour, until every value bin holds at
    least ``share`` or one bin is left (the missing bin is never merged: missing is missing).
    """
    numbers = np.asarray(values, dtype=np.float64)
    total = numbers.size
    present = numbers[~np.isnan(numbers)]
    kept = list(edges)
    while kept and total:
        counts = np.bincount(np.searchsorted(kept, present, "left"), minlength=len(kept) + 1)
        smallest = int(np.argmin(counts))
        if counts[smallest] >= share * total:
            break
        if smallest == 0:
            neighbour_edge = 0  # only a right neighbour
        elif smallest == len(kept) or counts[smallest - 1] <= counts[smallest + 1]:
            neighbour_edge = smallest - 1  # merge with the left one
        else:
            neighbour_edge = smallest
        del kept[neighbour_edge]
    return tuple(kept)


def fractions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts as fractions of their total (all zeros for no rows)."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else np.zeros_like(array)


def psi(served: Any, reference: Any) -> float:
    """Population stability index of served bin fractions against the reference's."""
    q = np.maximum(np.asarray(served, dtype=np.float64), EPSILON)
    p = np.maximum(np.asarray(reference, dtype=np.float64), EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def smoothed(counts: Any, held: Any, rows: float | None = None) -> np.ndarray:
    """Fractions of ``counts`` with ``SMOOTHING`` added to each ``held`` bin.

    ``held``: the bins the reference holds rows in. A bin the reference never saw gets nothing
    added, so a value that appears there still weighs in full. ``rows``: the total the counts
    stand for (their sum when not given), as the rules divide by the row-count gauge.
    """
    mask = np.asarray(held, dtype=bool)
    array = np.asarray(counts, dtype=np.float64) + SMOOTHING * mask
    total = (float(np.sum(counts)) if rows is None else float(rows)) + SMOOTHING * mask.sum()
    return array / total if total > 0 else np.zeros_like(array)


def psi_of_counts(served_counts: Any, reference: Any, reference_rows: float) -> float:
    """The verdict's PSI: served bin counts against reference fractions of ``reference_rows``.

    Both sides are smoothed (:func:`smoothed`) over the bins the reference holds rows in, then
    compared by :func:`psi`. The Prometheus rules compute exactly this from the served counters
    and the reference gauges. Without drift, the share of windows over the threshold stays
    near the configured rate at ``min_rows`` as well as on large windows (unsmoothed, a 3.6%
    bin made windows of 200 rows alarm 2.5 times as often).
    """
    p = np.asarray(reference, dtype=np.float64)
    held = p > 0
    return psi(smoothed(served_counts, held), smoothed(p * reference_rows, held, reference_rows))


def ks(served: Any, reference: Any, ordered: int) -> float:
    """Largest gap between the cumulative fractions over the first ``ordered`` bins."""
    if ordered == 0:
        return float("nan")
    q = np.cumsum(np.asarray(served, dtype=np.float64)[:ordered])
    p = np.cumsum(np.asarray(reference, dtype=np.float64)[:ordered])
    return float(np.max(np.abs(q - p)))


def degrees_of_freedom(reference: Any) -> int:
    """Bins the reference holds rows in, minus one (at least 1)."""
    return max(int(np.count_nonzero(np.asarray(reference) > 0)) - 1, 1)


def per_test_rate(false_alarm_rate: float, features: int, outputs: int = 1) -> float:
    """The rate each of a model's drift tests gets so that the model's stays ``false_alarm_rate``.

    One test per feature and one per watched output (the score; a multiclass model's predicted
    class too), each at ``false_alarm_rate / (features + outputs)`` (Bonferroni): a window
    without drift alarms on some feature with probability at most the model's rate, however
    many features it has.
    """
    return false_alarm_rate / (features + outputs)


def chi2_quantile(probability: float, df: int) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (within 1% for df >= 1 here).

    The same expression is written into the PromQL threshold rule.
    """
    z = NormalDist().inv_cdf(probability)
    h = 2.0 / (9.0 * df)
    return float(df * (1.0 - h + z * math.sqrt(h)) ** 3)


def psi_threshold(
    served_rows: float, reference_rows: float, df: int, false_alarm_rate: float, floor: float
) -> float:
    """The PSI above which a window of ``served_rows`` counts as drift.

    ``max(floor, (1/N + 1/M) * chi2_quantile(1 - false_alarm_rate, df))``: a window without
    drift crosses it with probability ``false_alarm_rate`` (for windows large enough that no
    bin is expected to be nearly empty, which ``monitor.min_rows`` ensures).
    """
    if served_rows <= 0:
        return float("inf")
    spread = 1.0 / served_rows + (1.0 / reference_rows if reference_rows > 0 else 0.0)
    return max(floor, spread * chi2_quantile(1.0 - false_alarm_rate, df))


def ks_threshold(served_rows: float, reference_rows: float, false_alarm_rate: float) -> float:
    """The two-sample KS critical distance ``c(alpha) * sqrt(1/N + 1/M)``.

    Over bins the distance can only be smaller than over raw values, so this errs towards
    silence. It is reported beside PSI; the drift verdict is PSI's.
    """
    if served_rows <= 0:
        return float("inf")
    c = math.sqrt(-math.log(false_alarm_rate / 2.0) / 2.0)
    spread = 1.0 / served_rows + (1.0 / reference_rows if reference_rows > 0 else 0.0)
    return c * math.sqrt(spread)
