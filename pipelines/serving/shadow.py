"""Shadow scoring: a challenger scores a share of live requests after their answers are sent.

With ``MODEL_SHADOW=<BentoML model tag>`` (a model imported with
``python -m pipelines.serving.store import --model DIR``, or by registry alias with
``make shadow-model ALIAS=<alias>``), each worker also loads that model. ``serve.shadow_rate``
of the requests the model answers (``MODEL_SHADOW_RATE``) are scored again by the challenger,
once the client has the whole response (:func:`pipelines.serving.http.after_response`): the
response is the model's, byte for byte, and its latency does not include the challenger's.

The challenger runs on the worker's event loop, so a slow challenger would delay the worker's
next requests. Its time budget (``serve.shadow_budget_ms``, ``MODEL_SHADOW_BUDGET_MS``) bounds
that: a call over budget (or one that raises) pauses shadow scoring for
``serve.breaker_cooldown`` seconds, through the same :class:`CircuitBreaker` the fallback chain
uses, opened by a single failure.

Both answers are written under the request's id, as request-log lines
(:mod:`pipelines.serving.request_log`) in ``paths.shadow``'s ``champion/`` and ``challenger/``
folders: ``make shadow-report SHADOW=<folder> [LABELS=<csv>]`` compares them. Fallback answers
are never shadowed: the comparison is of the two models.

Metric: ``model_shadow_total{outcome, challenger_version}`` (scored, late, error, paused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.serving import names
from pipelines.serving.fallback import CircuitBreaker
from pipelines.serving.request_log import RequestLog, sampled
from pipelines.serving.scoring import ServedModel

LOG = logging.getLogger(__name__)
VARIABLE = "MODEL_SHADOW"  # the challenger's BentoML model tag
RATE_VARIABLE = "MODEL_SHADOW_RATE"
BUDGET_VARIABLE = "MODEL_SHADOW_BUDGET_MS"
LOG_DIR_VARIABLE = "MODEL_SHADOW_DIR"
CHAMPION, CHALLENGER = "champion", "challenger"  # the log's two folders


class ShadowMetrics:
    """``model_shadow_total``, every outcome present from the start (created in a worker)."""

    def __init__(self, model: str, version: str, challenger: str) -> None:
        from prometheus_client import Counter

        ids = {
            names.MODEL: model,
            names.MODEL_VERSION: version,
            names.CHALLENGER_VERSION: challenger,
        }
        self._calls = Counter(
            names.SHADOW.removesuffix("_total"),
            "Challenger scoring calls after the response, by outcome (paused: skipped while "
            "a late or failed call's cool-down runs)",
            [*ids, "outcome"],
            registry=None,
        )
        self._ids = ids
        for outcome in names.SHADOW_OUTCOMES:
            self._calls.labels(**ids, outcome=outcome)

    def count(self, outcome: str) -> None:
        """One call of that outcome."""
        self._calls.labels(**self._ids, outcome=outcome).inc()


@dataclass
class Shadow:
    """A challenger that scores a sample of requests after the answer, within a time budget.

    Args:
        challenger: The challenger, loaded as the model is.
        rate: Share of the model's answers the challenger scores, 0 to 1.
        budget: Seconds a call may take; a slower one (or one that raises) opens ``breaker``.
        breaker: Pauses shadow scoring after a late or failed call.
        logs: Where the model's and the challenger's answers are written.
        metrics: Counts the calls by outcome (None: not counted).
    """

    challenger: ServedModel
    rate: float
    budget: float
    breaker: CircuitBreaker
    logs: tuple[RequestLog, RequestLog]
    metrics: ShadowMetrics | None = None
    clock: Callable[[], float] = field(default=time.perf_counter)

    @classmethod
    def of(
        cls,
        challenger: ServedModel,
        *,
        directory: Path,
        versions: tuple[str, str],
        rate: float,
        budget_ms: float,
        cooldown: float,
        metrics: ShadowMetrics | None,
    ) -> Shadow:
        """A shadow writing ``directory/champion`` and ``directory/challenger``.

        ``versions`` are the model's and the challenger's BentoML versions, written on their
        lines.
        """
        return cls(
            challenger=challenger,
            rate=rate,
            budget=budget_ms / 1000,
            breaker=CircuitBreaker(failures=1, cooldown=cooldown),
            logs=(
                RequestLog(Path(directory) / CHAMPION, 1.0, versions[0]),
                RequestLog(Path(directory) / CHALLENGER, 1.0, versions[1]),
            ),
            metrics=metrics,
        )

    def sampled(self) -> bool:
        """Whether this request is one the challenger scores."""
        return sampled(self.rate)

    def score(
        self,
        request_id: str,
        rows: Sequence[Mapping[str, Any]],
        answered: Sequence[Mapping[str, Any]],
    ) -> str:
        """Score ``rows`` with the challenger; log both answers; return the outcome.

        Args:
            request_id: The request's id (``X-Request-ID``): both lines carry it.
            rows: The request's validated records.
            answered: The model's predictions of them, as the response has them (JSON).
        """
        if not self.breaker.allows():
            return self._count("paused")
        started = self.clock()
        try:
            response = self.challenger.predict(rows)
        except Exception:
            LOG.exception("the challenger failed to score %d rows: shadow paused", len(rows))
            self.breaker.failure()
            return self._count("error")
        late = self.clock() - started > self.budget
        if late:
            LOG.warning(
                "the challenger took over its %.0f ms budget: shadow paused", self.budget * 1000
            )
            self.breaker.failure()
        else:
            self.breaker.success()
        predictions = response.predictions  # type: ignore[attr-defined]
        champion, challenger = self.logs
        champion.write(request_id, rows, answered)
        challenger.write(request_id, rows, [p.model_dump(mode="json") for p in predictions])
        return self._count("late" if late else "scored")

    def _count(self, outcome: str) -> str:
        if self.metrics is not None:
            self.metrics.count(outcome)
        return outcome
