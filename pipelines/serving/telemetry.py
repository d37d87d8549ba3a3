"""The model's own Prometheus metrics, exported by every worker of the service on ``/metrics``.

Every series carries ``model`` (``register.model_name``) and ``model_version`` (the BentoML model
tag's version, a content hash), and nothing of high cardinality: features, bins and outcomes are
fixed by the schema and the reference profile.

- ``model_info`` (gauge, 1): which model version serves, with its MLflow version and commit.
- ``model_feature_bin_total`` / ``model_score_bin_total`` (counters): served values per bin of
  the reference profile, per feature and for the score. PSI and KS are computed from them by
  the Prometheus rules (``deploy/monitoring/``).
- ``model_predicted_class_bin_total`` (counter, a multiclass model only): served rows per
  predicted class (the reference profile's class bins), beside
  ``model_reference_predicted_class_fraction`` and ``model_reference_predicted_class_rows``.
- ``model_score`` (histogram): the score in fixed buckets, the same for every version (a
  probability's twentieths; a regression's prediction: the reference deciles').
- ``model_reference_feature_fraction`` / ``model_reference_score_fraction`` and
  ``model_reference_feature_rows`` / ``model_reference_score_rows`` (gauges, constant): the
  reference profile itself, so a rule compares each version with its own reference.
- ``model_requests_total`` (counter) and ``model_request_duration_seconds`` (histogram): every
  request to an API route, seen outermost, so refusals (400, 401, 413, 415, 429, 504) are
  counted with their ``outcome``; the counter's ``key`` label is the API key's name from the
  key file (``none``: no key sent, ``unknown``: a key not in the file, "": keys off).
- ``model_decisions_total`` and ``model_expected_value_total`` (counters, a classifier's):
  served decisions, and their expected value by the value model stored with the model, in total
  and per group of each sensitive column (:class:`DecisionMetrics`).

The metric objects are created in each worker, after BentoML has pointed
``PROMETHEUS_MULTIPROC_DIR`` at the directory it aggregates for ``/metrics``: created at import,
they would write to the process's memory and never be served. ``bentoml.metrics`` (deprecated in
BentoML 1.4 in favour of ``prometheus_client``) only defers that import, which this module does.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.drift import Binning
from pipelines.core.fairness import MISSING
from pipelines.core.metrics import Task
from pipelines.core.profile import Distribution, Profile
from pipelines.core.value import ValueModel
from pipelines.serving import names

STATUS_OUTCOMES = {  # the rest: 2xx ok, other 4xx invalid, other 5xx error
    400: "invalid",
    401: "unauthorized",
    413: "too_large",
    415: "unsupported_type",
    429: "overloaded",
    504: "timeout",
}


def outcome(status: int) -> str:
    """What a response status says about the request, as ``model_requests_total`` labels it."""
    if status < 400:
        return "ok"
    if status in STATUS_OUTCOMES:
        return STATUS_OUTCOMES[status]
    return "error" if status >= 500 else "invalid"


FLUSH_SECONDS = 1.0  # counts reach /metrics at most this late
VECTOR_BATCH = 16  # records from which a feature's bins are counted with numpy


class Batched:
    """Increments held in a plain list and handed to ``prometheus_client`` once a second.

    An increment of a multiprocess metric locks and writes a memory-mapped file (~3 us here):
    twenty of them per record cost ~10% of a one-record request. Adding to a list entry costs
    a few percent of that; :meth:`flush` passes the sums on, scheduled on the worker's event
    loop (where the service's coroutines run, so no count is lost between the two) at most
    ``FLUSH_SECONDS`` after the first unflushed one. Outside an event loop it flushes at once.
    """

    def __init__(self) -> None:
        self.values: list[Any] = []  # anything with .inc(amount)
        self.pending: list[float] = []
        self._scheduled = False

    def slot(self, value: Any) -> int:
        """Register a value to add to; returns its index in :attr:`pending`."""
        self.values.append(value)
        self.pending.append(0)
        return len(self.values) - 1

    def histogram(self, child: Any) -> tuple[list[float], list[int], int]:
        """Upper bounds, bucket slots and the sum's slot of a labelled ``Histogram``.

        prometheus_client cannot add many observations at once; its histogram keeps one value
        per bucket (not cumulative) and one for the sum, which are added to here. The service's
        tests check the exported histogram against the served scores, observation for
        observation.
        """
        bounds = list(child._upper_bounds)
        buckets = [self.slot(value) for value in child._buckets]
        return bounds, buckets, self.slot(child._sum)

    def schedule(self) -> None:
        """Flush within ``FLUSH_SECONDS`` (at once outside an event loop)."""
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_later(FLUSH_SECONDS, self.flush)
        self._scheduled = True

    def flush(self) -> None:
        """Add every pending amount to its value and start again from zero."""
        self._scheduled = False
        pending = self.pending
        for i, amount in enumerate(pending):
            if amount:
                self.values[i].inc(amount)
                pending[i] = 0


def binned_series(
    batched: Batched,
    reference: Distribution,
    ids: dict[str, str],
    *,
    fraction: tuple[str, str],
    rows: tuple[str, str],
    served: tuple[str, str],
) -> int:
    """Export a reference distribution and count served values per bin, labelled by ``ids``.

    ``fraction`` (the reference fraction per bin), ``rows`` (the reference's rows) and ``served``
    (a counter per bin, in consecutive slots of ``batched``, bin order) are ``(name, help)``.

    Returns:
        The first bin's slot in ``batched``.
    """
    from prometheus_client import Counter, Gauge

    labels = [*ids, "bin"]
    gauge = Gauge(*fraction, labels, registry=None, multiprocess_mode="max")
    for label, value in zip(reference.binning.labels, reference.fractions, strict=True):
        gauge.labels(**ids, bin=label).set(value)
    Gauge(*rows, list(ids), registry=None, multiprocess_mode="max").labels(**ids).set(
        reference.rows
    )
    counter = Counter(*served, labels, registry=None)
    slots = [batched.slot(counter.labels(**ids, bin=b)) for b in reference.binning.labels]
    return slots[0]


class ServiceMetrics:
    """One worker's metric series for one model version, resolved once.

    Args:
        profile: The model's reference profile.
        model: The registered model name.
        version: The model version every series is labelled with.
        info: Extra ``model_info`` labels (MLflow version, git commit).
    """

    def __init__(
        self, profile: Profile, model: str, version: str, info: Mapping[str, str | None]
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        ids = {"model": model, "model_version": version}
        labels = (names.MODEL, names.MODEL_VERSION)
        # registry=None: in multiprocess mode /metrics reads the files every process writes,
        # not a registry, and a second instance in one process must not clash.
        extra = {key: value or "" for key, value in info.items()}
        Gauge(
            names.INFO,
            "The model version this worker serves",
            [*labels, *extra],
            registry=None,
            multiprocess_mode="max",
        ).labels(**ids, **extra).set(1)
        fraction = Gauge(
            names.REFERENCE_FEATURE_FRACTION,
            "Reference (training) fraction of each feature's bin",
            [*labels, "feature", "bin", "kind"],
            registry=None,
            multiprocess_mode="max",
        )
        rows = Gauge(
            names.REFERENCE_FEATURE_ROWS,
            "Reference (training) rows of each feature",
            [*labels, "feature"],
            registry=None,
            multiprocess_mode="max",
        )
        served = Counter(
            names.FEATURE_BIN,
            "Served values per feature and bin",
            [*labels, "feature", "bin"],
            registry=None,
        )
        self.batched = batched = Batched()
        self._features: list[tuple[str, Binning, int]] = []
        # The per-record path, without a call per value: (name, edges, first slot, missing slot)
        # and (name, slot by category, other slot).
        self._numeric: list[tuple[str, tuple[float, ...], int, int]] = []
        self._categorical: list[tuple[str, dict[str | None, int], int]] = []
        for name, reference in profile.features.items():
            kind = reference.binning.kind
            bins = reference.binning.labels
            for label, value in zip(bins, reference.fractions, strict=True):
                fraction.labels(**ids, feature=name, bin=label, kind=kind).set(value)
            rows.labels(**ids, feature=name).set(reference.rows)
            slots = [batched.slot(served.labels(**ids, feature=name, bin=b)) for b in bins]
            self._features.append((name, reference.binning, slots[0]))
            binning = reference.binning
            missing = slots[-1]
            if binning.kind == "numeric":
                self._numeric.append((name, binning.edges, slots[0], missing))
            else:  # the request model allows only the schema's categories and None
                lookup: dict[str | None, int] = dict(zip(binning.categories, slots, strict=False))
                self._categorical.append((name, lookup | {None: missing}, slots[-2]))

        score = profile.score
        self._score_binning = score.binning
        self._score_bins = binned_series(
            batched,
            score,
            ids,
            fraction=(
                names.REFERENCE_SCORE_FRACTION,
                "Reference (test rows) fraction of each score bin",
            ),
            rows=(names.REFERENCE_SCORE_ROWS, "Reference (test) rows of the score"),
            served=(names.SCORE_BIN, "Served scores per reference score bin"),
        )
        self._score = batched.histogram(
            Histogram(
                names.SCORE,
                "Served score: a probability (binary: the positive class's; multiclass: the top "
                "one) or a regression's prediction",
                labels,
                buckets=names.score_buckets(score.binning.edges),
                registry=None,
            ).labels(**ids)
        )
        self._requests = Counter(
            names.REQUESTS,
            "API requests by endpoint, status code, outcome and API key name",
            [*labels, "endpoint", "code", "outcome", "key"],
            registry=None,
        )
        self._duration = Histogram(
            names.REQUEST_DURATION,
            "API request duration in seconds, refusals and queue wait included",
            [*labels, "endpoint"],
            buckets=names.DURATION_BUCKETS,
            registry=None,
        )
        self._classes = self._class_slots(profile, ids)
        self._ids = self.ids = ids
        self._request_slots: dict[tuple[str, int, str], tuple[int, tuple[Any, ...]]] = {}

    def _class_slots(self, profile: Profile, ids: dict[str, str]) -> tuple[int, int] | None:
        """A multiclass model's predicted-class series: (first slot, classes); else None."""
        reference = profile.predicted
        if reference is None:
            return None
        # the class bins come first, in the schema's order: a class's position is its offset
        first = binned_series(
            self.batched,
            reference,
            ids,
            fraction=(
                names.REFERENCE_CLASS_FRACTION,
                "Reference (test rows) share of rows predicted as each class",
            ),
            rows=(names.REFERENCE_CLASS_ROWS, "Reference (test) rows of the predicted class"),
            served=(names.CLASS_BIN, "Served rows per predicted class"),
        )
        return first, len(reference.binning.categories)

    def observe(
        self,
        records: Sequence[Mapping[str, Any]],
        scores: Sequence[float],
        classes: Sequence[int] | None = None,
    ) -> None:
        """Count served records into their feature bins and their scores into the score's.

        ``classes``: a multiclass model's predicted class of each record, as positions in the
        schema's class order (:func:`pipelines.core.model.monitored_class`).
        """
        pending = self.batched.pending
        self._count_classes(classes)
        if len(records) < VECTOR_BATCH:
            # Validated records: numbers are never NaN, categories are the schema's or None.
            for record in records:
                for name, edges, first, missing in self._numeric:
                    value = record[name]
                    pending[missing if value is None else first + bisect_left(edges, value)] += 1
                for name, slots, other in self._categorical:
                    pending[slots.get(record[name], other)] += 1
        else:  # a batch: one bin lookup per distinct value
            for name, binning, first in self._features:
                for value, count in Counter([record[name] for record in records]).items():
                    pending[first + binning.index_of(value)] += count
        bounds, buckets, total = self._score
        if len(scores) < VECTOR_BATCH:
            edges = self._score_binning.edges  # a score is never missing
            for score in scores:
                pending[self._score_bins + bisect_left(edges, score)] += 1
                pending[buckets[bisect_left(bounds, score)]] += 1
                pending[total] += score
        else:
            values = np.asarray(scores, dtype=np.float64)
            for first, cuts, width in (
                (self._score_bins, self._score_binning.edges, len(self._score_binning.labels)),
                (buckets[0], bounds, len(buckets)),
            ):
                index = np.searchsorted(cuts, values, "left")
                for i, count in enumerate(np.bincount(index, minlength=width).tolist()):
                    pending[first + i] += count
            pending[total] += float(values.sum())
        self.batched.schedule()

    def _count_classes(self, classes: Sequence[int] | None) -> None:
        """Count predicted classes (positions) into their bins, when the profile has them."""
        if classes is None or self._classes is None:
            return
        first, width = self._classes
        pending = self.batched.pending
        if len(classes) < VECTOR_BATCH:
            for position in classes:
                pending[first + position] += 1
        else:
            counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=width)
            for i, count in enumerate(counts.tolist()):
                pending[first + i] += count

    def request(self, endpoint: str, status: int, seconds: float, key: str = "") -> None:
        """Count one API request by its response status and API key name, and time it.

        ``key`` is a name from the key file, ``none``, ``unknown`` or "" (keys off): never a key.
        """
        found = (endpoint, status, key)
        slots = self._request_slots.get(found)
        if slots is None:
            counter = self._requests.labels(
                **self._ids,
                endpoint=endpoint,
                code=str(status),
                outcome=outcome(status),
                key=key,
            )
            duration = self.batched.histogram(self._duration.labels(**self._ids, endpoint=endpoint))
            slots = (self.batched.slot(counter), duration)
            self._request_slots[found] = slots
        count, (bounds, buckets, total) = slots
        pending = self.batched.pending
        pending[count] += 1
        pending[buckets[bisect_left(bounds, seconds)]] += 1
        pending[total] += seconds
        self.batched.schedule()


def group_of(value: Any) -> str:
    """A served value's group, as the fairness audit names it (missing: ``<missing>``)."""
    return MISSING if value is None else str(value)


class DecisionMetrics:
    """A classifier's served decisions and their expected value, in total and per group.

    Series are labelled ``column`` and ``group``: both empty for every row, else a sensitive
    column and the row's group in it. The groups are those of the test rows' fairness audit
    (``fairness.json`` stored with the model); a value it did not have counts as ``other``, so
    the labels stay as few as the audit's groups. The expected value of a row's decision is its
    value model's (:meth:`pipelines.core.value.ValueModel.expected`), counted as a gain or a
    loss (a counter cannot fall); without the amount column among the request's fields, only
    the decisions are counted.

    Args:
        batched: The worker's batched increments.
        ids: The ``model`` and ``model_version`` labels.
        classes: The decisions' names, by class position (binary: negative, positive).
        groups: Each sensitive column's groups.
        value: The value model, if the model has one.
    """

    def __init__(
        self,
        batched: Batched,
        ids: dict[str, str],
        classes: Sequence[Any],
        groups: Mapping[str, Sequence[str]],
        value: ValueModel | None,
    ) -> None:
        from prometheus_client import Counter

        labels = [*ids, "column", "group"]
        decisions = Counter(
            names.DECISIONS,
            "Served decisions, in total (column and group empty) and per group of a column",
            [*labels, "decision"],
            registry=None,
        )
        worth = None
        if value is not None:
            worth = Counter(
                names.EXPECTED_VALUE,
                "Expected value of the served decisions by the value model (part: gain or loss)",
                [*labels, "part"],
                registry=None,
            )
        self.batched, self.value = batched, value
        self.groups = {c: frozenset(g) for c, g in groups.items()}
        # (column, group) -> (first decision slot, gain slot or -1, loss slot or -1)
        self._slots: dict[tuple[str, str], tuple[int, int, int]] = {}
        pairs = [("", "")] + [
            (c, g) for c, found in groups.items() for g in [*found, names.OTHER_GROUP]
        ]
        for column, group in dict.fromkeys(pairs):
            first = -1
            for name in classes:
                child = decisions.labels(**ids, column=column, group=group, decision=str(name))
                slot = batched.slot(child)
                first = slot if first < 0 else first
            gain = loss = -1
            if worth is not None:
                gain = batched.slot(worth.labels(**ids, column=column, group=group, part="gain"))
                loss = batched.slot(worth.labels(**ids, column=column, group=group, part="loss"))
            self._slots[(column, group)] = (first, gain, loss)

    @classmethod
    def of_model(
        cls,
        metrics: ServiceMetrics,
        meta: Mapping[str, Any],
        audit_file: Path,
        classes: Sequence[Any],
    ) -> DecisionMetrics:
        """The decision series of a model: its ``meta.json``'s value model, its audit's groups."""
        import json

        stored = meta.get("value")
        task: Task = "binary" if len(classes) == 2 else "multiclass"
        value = None if stored is None else ValueModel.from_meta(task, stored)
        audit = json.loads(audit_file.read_text()) if audit_file.is_file() else {}
        groups = {column: list(found["groups"]) for column, found in audit.items()}
        return cls(metrics.batched, metrics.ids, classes, groups, value)

    def observe(
        self, records: Sequence[Mapping[str, Any]], output: np.ndarray, decided: Sequence[int]
    ) -> None:
        """Count each record's decision (a class position) and its expected value."""
        expected: list[float] | None = None
        value = self.value
        if value is not None and (value.amount is None or (records and value.amount in records[0])):
            amount = None
            if value.amount is not None:
                amount = [float(r[value.amount] or 0.0) for r in records]
            expected = value.expected(output.tolist(), decided, amount)
        pending, slots = self.batched.pending, self._slots
        keys = [("", "")]
        for i, record in enumerate(records):
            keys[1:] = [
                (c, text if (text := group_of(record[c])) in found else names.OTHER_GROUP)
                for c, found in self.groups.items()
            ]
            position = decided[i]
            for key in keys:
                first, gain, loss = slots[key]
                pending[first + position] += 1
                if expected is not None:
                    worth = expected[i]
                    pending[gain if worth > 0 else loss] += abs(worth)
        self.batched.schedule()


_ACTIVE: ServiceMetrics | None = None


def activate(metrics: ServiceMetrics) -> None:
    """Make ``metrics`` the ones :func:`record_request` reports to (one model per worker)."""
    global _ACTIVE  # noqa: PLW0603 - a worker serves one model; its middleware is built earlier
    _ACTIVE = metrics


def record_request(endpoint: str, status: int, seconds: float, key: str = "") -> None:
    """Report an API request to the worker's active metrics (none before the model loads)."""
    if _ACTIVE is not None:
        _ACTIVE.request(endpoint, status, seconds, key)
