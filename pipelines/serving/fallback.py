"""Graceful degradation: the model, then its baseline, then the prior, behind a circuit breaker.

When the model fails at run time (an exception in scoring), ``/predict`` answers from the next
link of the chain: the linear baseline trained and packed with the model (its ``baseline/``
directory), then the prior (``meta.json``'s ``prior``: the training labels' class shares or
mean, no model at all). The response says which: the model block's ``fallback`` field and the
``X-Model-Fallback`` header (absent when the model answered).

A scoring call cannot be stopped once started without handing every request to a thread, which
costs more than scoring a row (see :mod:`pipelines.serving.service`). So the deadline
(``serve.deadline_ms``) is judged when the call returns: a late answer is still served, being the
best one there is by then, but counts as a failure of the model. After
``serve.breaker_failures`` failures in a row the :class:`CircuitBreaker` opens: requests skip
the model for ``serve.breaker_cooldown`` seconds and go straight to the baseline; then one
request tries the model again (half-open) and closes the breaker if it answers in time.

When every link fails, ``/predict`` answers 503 with a JSON body that names what failed and a
``Retry-After`` header: the breaker's remaining cool-down, at least a second
(:func:`unavailable`). A fallback that could not be loaded when the worker started is left out
of the chain, logged as a warning naming its files and the error, and counted.

``MODEL_FAULT`` is a test hook (:class:`Faults`): read once when a worker starts, it makes the
model's (or the baseline's) scoring fail, so that tests can watch the chain in a real server.
Nothing a request carries can turn it on.

Metrics: ``model_fallback_total{reason, used}``, ``model_primary_failures_total{reason}``,
``model_circuit_breaker_state`` (0 closed, 1 half-open, 2 open; the highest of the workers),
``model_circuit_breaker_transitions_total{state}`` and ``model_fallback_unavailable{link}`` (1
when that fallback could not be loaded).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.io import PipelineError
from pipelines.core.model import BASELINE as BASELINE_DIR
from pipelines.serving import names
from pipelines.serving.scoring import Scorer, ServedModel, load_served

LOG = logging.getLogger(__name__)
HEADER = "X-Model-Fallback"
FAULT_VARIABLE = "MODEL_FAULT"
PRIMARY, BASELINE, PRIOR = "primary", "baseline", "prior"

CLOSED, HALF_OPEN, OPEN = names.BREAKER_STATES
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the gauge's value: higher is worse

Output = Callable[[Sequence[Any]], np.ndarray]


class ModelUnavailableError(Exception):
    """Every link of the chain failed: the request gets a 503 (:func:`unavailable`).

    Attributes:
        failed: What happened to each link, by name, in the chain's order.
        retry_after: Whole seconds until the model may be tried again (at least 1).
    """

    def __init__(self, failed: Mapping[str, str], retry_after: int) -> None:
        self.failed = dict(failed)
        self.retry_after = retry_after
        said = "; ".join(f"{link} {what}" for link, what in self.failed.items())
        super().__init__(f"the model and every fallback failed: {said}")


# ---------------------------------------------------------------------------------------------
# The circuit breaker


@dataclass
class CircuitBreaker:
    """Stops calling a failing model for a while, then lets one request try it.

    Closed: every request tries the model; ``failures`` failures in a row open it. Open: no
    request tries it until ``cooldown`` seconds have passed; then the next one does (half-open)
    and its success closes the breaker, its failure opens it for another cool-down. A worker
    scores one request at a time (scoring runs on its event loop), so half-open lets exactly
    one request through.

    ``on_change(state)`` is called on every transition (the metrics count them).
    """

    failures: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str], None] | None = None
    state: str = CLOSED
    consecutive: int = 0
    opened_at: float = 0.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown < 0:
            raise PipelineError("a circuit breaker needs failures >= 1 and cooldown >= 0")

    def allows(self) -> bool:
        """Whether this request may try the model (an open breaker past its cool-down: yes)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown:
            self._move(HALF_OPEN)
            return True
        return False

    def success(self) -> None:
        """The model answered in time."""
        self.consecutive = 0
        if self.state != CLOSED:
            self._move(CLOSED)

    def failure(self) -> None:
        """The model raised or missed its deadline."""
        self.consecutive += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.consecutive >= self.failures):
            self.opened_at = self.clock()
            self._move(OPEN)

    def remaining(self) -> float:
        """Seconds until an open breaker lets a request try the model again; 0 otherwise."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def _move(self, state: str) -> None:
        LOG.warning("model circuit breaker: %s -> %s", self.state, state)
        self.state = state
        if self.on_change is not None:
            self.on_change(state)


# ---------------------------------------------------------------------------------------------
# Fault injection (a test hook)


FAULT = re.compile(
    r"^(?:(?P<target>primary|baseline|prior):)?(?P<kind>raise|slow)(?::(?P<n>\d+))?$"
)


class InjectedFaultError(RuntimeError):
    """The failure ``MODEL_FAULT`` asked for."""


@dataclass(frozen=True)
class Faults:
    """``MODEL_FAULT``: failures to inject into scoring, for tests only.

    A comma-separated list of ``[primary:|baseline:|prior:]<fault>`` where the fault is
    ``raise`` (every call raises), ``raise:<n>`` (the first n calls raise, then it recovers) or
    ``slow:<ms>`` (every call sleeps that long first). ``raise,baseline:raise`` leaves only the
    prior; ``raise,baseline:raise,prior:raise`` leaves nothing (a 503). Read once, when a worker
    starts.
    """

    faults: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Parse the variable's value (None or empty: no fault).

        Raises:
            PipelineError: An item that is not a fault, naming the syntax.
        """
        faults: dict[str, tuple[str, int | None]] = {}
        for item in (text or "").split(","):
            if not item.strip():
                continue
            match = FAULT.match(item.strip())
            if match is None or (match["kind"] == "slow" and match["n"] is None):
                raise PipelineError(
                    f"{FAULT_VARIABLE}={text!r}: use a comma-separated list of "
                    "[primary:|baseline:|prior:]raise, raise:<calls> or slow:<ms>"
                )
            faults[match["target"] or PRIMARY] = (
                match["kind"],
                None if match["n"] is None else int(match["n"]),
            )
        return cls(faults)

    def wrap(self, target: str, output: Output) -> Output:
        """``output`` with the fault asked for ``target``, or ``output`` itself (no cost)."""
        if target not in self.faults:
            return output
        kind, n = self.faults[target]
        LOG.warning("%s=%s: the %s's scoring will fail (a test hook)", FAULT_VARIABLE, kind, target)
        if kind == "slow":
            seconds = (n or 0) / 1000

            def slow(rows: Sequence[Any]) -> np.ndarray:
                time.sleep(seconds)
                return output(rows)

            return slow
        calls = [0]

        def failing(rows: Sequence[Any]) -> np.ndarray:
            calls[0] += 1
            if n is None or calls[0] <= n:
                raise InjectedFaultError(f"{FAULT_VARIABLE}: injected failure of the {target}")
            return output(rows)

        return failing


# ---------------------------------------------------------------------------------------------
# Metrics


class FallbackMetrics:
    """The chain's Prometheus series, labelled by model and version (created in a worker)."""

    def __init__(self, model: str, version: str) -> None:
        from prometheus_client import Counter, Gauge

        ids = {names.MODEL: model, names.MODEL_VERSION: version}
        labels = list(ids)
        self._fallbacks = Counter(
            names.FALLBACKS.removesuffix("_total"),
            "Requests answered by a fallback, by why the model did not answer and what did",
            [*labels, "reason", "used"],
            registry=None,
        )
        self._failures = Counter(
            names.PRIMARY_FAILURES.removesuffix("_total"),
            "Model scoring calls that raised (error) or answered after serve.deadline_ms",
            [*labels, "reason"],
            registry=None,
        )
        self._state = Gauge(
            names.BREAKER_STATE,
            "Circuit breaker of the model: 0 closed, 1 half-open, 2 open (the worst worker)",
            labels,
            registry=None,
            multiprocess_mode="livemax",
        ).labels(**ids)
        self._transitions = Counter(
            names.BREAKER_TRANSITIONS.removesuffix("_total"),
            "Circuit breaker transitions, by the state entered",
            [*labels, "state"],
            registry=None,
        )
        self._unavailable = Gauge(
            names.FALLBACK_UNAVAILABLE,
            "Fallbacks the chain lacks: 1 when that link could not be loaded (see the log)",
            [*labels, "link"],
            registry=None,
            multiprocess_mode="livemax",
        )
        self._ids = ids
        self._state.set(STATE_VALUES[CLOSED])
        # Every series present from the start, at 0: rate() and increase() see the first event.
        for reason in names.FAILURE_REASONS:
            self._failures.labels(**ids, reason=reason)
        for reason in names.FALLBACK_REASONS:
            for used in names.FALLBACK_USED:
                self._fallbacks.labels(**ids, reason=reason, used=used)
        for state in names.BREAKER_STATES:
            self._transitions.labels(**ids, state=state)

    def fallback(self, reason: str, used: str) -> None:
        """A request answered by ``used`` because the model failed for ``reason``."""
        self._fallbacks.labels(**self._ids, reason=reason, used=used).inc()

    def failure(self, reason: str) -> None:
        """The model raised (``error``) or was late (``deadline``)."""
        self._failures.labels(**self._ids, reason=reason).inc()

    def state(self, state: str) -> None:
        """The breaker entered ``state``."""
        self._state.set(STATE_VALUES[state])
        self._transitions.labels(**self._ids, state=state).inc()

    def unavailable(self, missing: Sequence[str]) -> None:
        """Which fallbacks could not be loaded: 1 for those, 0 for the others."""
        for link in names.FALLBACK_USED:
            self._unavailable.labels(**self._ids, link=link).set(int(link in missing))


# ---------------------------------------------------------------------------------------------
# The chain


@dataclass(frozen=True)
class Unloadable:
    """A fallback packed with the model whose files could not be loaded (the log says why).

    Unlike a fallback the model never had (a model trained on Dask has no baseline), it is
    counted (``model_fallback_unavailable``) and named in a 503's body.
    """

    name: str


@dataclass
class Link:
    """One way of answering: a name, what answers (a served model) and its scoring function."""

    name: str
    model: Any  # a scoring.ServedModel (anything whose ``answer`` builds the response)
    output: Output


@dataclass
class Chain:
    """The model, then its fallbacks in order, behind a circuit breaker.

    :meth:`score` returns the link that answered and its output. When the model answers in
    time it costs two clock reads and a state check over scoring alone.
    """

    primary: Link
    fallbacks: Sequence[Link]
    breaker: CircuitBreaker
    deadline: float | None = None  # seconds; None: no deadline
    metrics: FallbackMetrics | None = None
    clock: Callable[[], float] = time.perf_counter
    missing: Sequence[str] = ()  # the fallbacks packed with the model that could not be loaded

    def score(self, rows: Sequence[Any]) -> tuple[Link, np.ndarray]:
        """The first link's output that succeeds, starting with the model if the breaker allows.

        Raises:
            ModelUnavailableError: Every link failed.
        """
        breaker = self.breaker
        if not breaker.allows():
            return self._fallback(rows, "circuit_open", "not tried: its circuit breaker is open")
        started = self.clock()
        try:
            output = self.primary.output(rows)
        except Exception as error:
            LOG.exception("the model failed to score %d rows: falling back", len(rows))
            self._failed("error")
            return self._fallback(rows, "error", f"raised {type(error).__name__}")
        if self.deadline is not None and self.clock() - started > self.deadline:
            # Late, yet the best answer there is now; the breaker spares the next requests.
            self._failed("deadline")
        else:
            breaker.success()
        return self.primary, output

    def _failed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.failure(reason)
        self.breaker.failure()

    def _fallback(self, rows: Sequence[Any], reason: str, primary: str) -> tuple[Link, np.ndarray]:
        failed = {PRIMARY: primary}
        for link in self.fallbacks:
            try:
                output = link.output(rows)
            except Exception as error:
                LOG.exception("the %s failed to score too", link.name)
                failed[link.name] = f"raised {type(error).__name__}"
                continue
            if self.metrics is not None:
                self.metrics.fallback(reason, link.name)
            return link, output
        failed |= {name: "could not be loaded when the service started" for name in self.missing}
        order = [PRIMARY, *names.FALLBACK_USED]
        failed = dict(sorted(failed.items(), key=lambda item: order.index(item[0])))
        raise ModelUnavailableError(failed, max(1, math.ceil(self.breaker.remaining())))


def unavailable(error: ModelUnavailableError) -> Any:
    """The 503 of a request no link could answer: what failed, and when to try again.

    A response of its own, with its status and ``Retry-After``: BentoML sends an API's
    response as it is.
    """
    from starlette.responses import JSONResponse

    seconds = error.retry_after
    body = {
        "error": (
            f"no prediction: {error}. Nothing in the request is at fault: send it again in "
            f"{seconds} s (Retry-After). If this lasts, the service's operators find each "
            "failure in its logs and metrics."
        ),
        "failed": error.failed,
        "retry_after": seconds,
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(seconds)})


def answered_by(link: str, response: Any) -> Any:
    """A fallback's ``/predict`` response, sent with the ``X-Model-Fallback`` header naming it.

    A response of its own, as :func:`unavailable`'s: an API that takes BentoML's context to
    set a header pays for it on every request (0.5 us), where a fallback answers seldom.
    """
    from starlette.responses import Response

    return Response(
        response.model_dump_json(), media_type="application/json", headers={HEADER: link}
    )


def baseline_of(
    directory: Path, served: ServedModel, info: Mapping[str, Any]
) -> ServedModel | Unloadable | None:
    """The baseline packed with the model (its ``baseline/``), or None when it has none.

    A baseline that cannot be loaded is logged as a warning naming its files and the error, and
    returned as :class:`Unloadable`: the model serves, its chain is shorter (the prior alone),
    and ``model_fallback_unavailable{link="baseline"}`` says so (:func:`chain_of`).
    """
    where = directory / BASELINE_DIR
    if not (where / "meta.json").exists():
        LOG.warning("the model has no baseline (%s): a failure falls back on the prior", where)
        return None
    try:
        baseline = load_served(where, info, served.block.bento_model_tag, served.schema)
    except Exception as error:
        LOG.warning(
            "the baseline in %s cannot be loaded (%s: %s): a failure of the model falls back "
            "on the prior",
            where,
            type(error).__name__,
            error,
            exc_info=True,
        )
        return Unloadable(BASELINE)
    return replace(baseline, block=baseline.block.model_copy(update={"fallback": BASELINE}))


def prior_of(meta: Mapping[str, Any], served: ServedModel) -> ServedModel | None:
    """The prior of ``meta.json`` as a served model of constant output, or None without one."""
    prior = meta.get("prior")
    if prior is None:
        LOG.warning("the model's meta.json has no prior: a model trained before fallbacks")
        return None
    constant = Scorer(
        kind=PRIOR,
        model=np.asarray(prior["output"], dtype=np.float64),
        columns=served.scorer.columns,
        task=served.task,
    )
    block = served.block.model_copy(update={"fallback": PRIOR})
    width = float(prior.get("half_width", 0.0))
    return replace(served, scorer=constant, block=block, half_width=width)


def chain_of(
    served: ServedModel,
    fallbacks: Sequence[ServedModel | Unloadable | None],
    *,
    breaker: CircuitBreaker,
    deadline: float | None,
    faults: Faults,
    metrics: FallbackMetrics | None,
) -> Chain:
    """The chain of a served model and its fallbacks, faults injected.

    A fallback that is None (the model has none) or :class:`Unloadable` is left out; the
    unloadable ones are the chain's ``missing``, which ``metrics`` counts.
    """

    def link(model: ServedModel) -> Link:
        name = model.block.fallback or PRIMARY
        return Link(name, model, faults.wrap(name, model.output))

    links = [link(model) for model in fallbacks if isinstance(model, ServedModel)]
    missing = [model.name for model in fallbacks if isinstance(model, Unloadable)]
    if metrics is not None:
        metrics.unavailable(missing)
    return Chain(
        primary=link(served),
        fallbacks=links,
        breaker=breaker,
        deadline=deadline,
        metrics=metrics,
        missing=missing,
    )
