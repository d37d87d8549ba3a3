"""The HTTP service: ``bentoml serve pipelines.serving.service:ModelService`` (``make serve``).

``POST /predict`` and ``POST /explain`` take ``{"records": [{<raw feature>: value, ...}, ...]}``;
``GET /card`` answers the model card stored with the model (Markdown); ``GET /livez``,
``/readyz`` and ``/metrics`` are BentoML's. With ``MODEL_API_KEYS_FILE`` set, the first three
need ``Authorization: Bearer <key>`` (``keys``). The request model, the encoder, the scoring, the
HTTP guard, the key check and the model store live beside it (``api``, ``scoring``, ``http``,
``keys``, ``store``); this module only wires them to BentoML. Importing it reads params.yaml,
the schema, the key file and the model's files (to name its tag); the model itself is loaded
when a worker starts.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, cast

import bentoml
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel

from pipelines.core.io import PipelineError
from pipelines.core.model import monitored_class, monitored_score
from pipelines.core.profile import Profile
from pipelines.params import ServeParams, load_paths, load_section
from pipelines.schema import load_schema
from pipelines.serving import api, fallback, http, keys, scoring, shadow, store, telemetry
from pipelines.serving.request_log import RequestLog

SOURCES = store.Sources.from_params()
SETTINGS = load_section("serve", ServeParams)
SCHEMA = load_schema(SOURCES.schema)
Records = api.request_model(SCHEMA, SETTINGS.max_batch)
# The responses' OpenAPI models follow the task the schema says (the model must agree).
TASK = SCHEMA.target.task
RESPONSES = api.RESPONSES[TASK]
API_ROUTES = ["/predict", "/explain"]
http.install_request_timeout(API_ROUTES, observe=telemetry.record_request)
# A deployment overrides serve.metrics, serve.request_log and paths.requests with these.
METRICS = "MODEL_METRICS"
REQUEST_LOG_RATE = "MODEL_REQUEST_LOG_RATE"
REQUEST_LOG_DIR = "MODEL_REQUEST_LOG_DIR"
# ... and serve.deadline_ms, serve.breaker_failures and serve.breaker_cooldown with these
DEADLINE_MS = "MODEL_DEADLINE_MS"
BREAKER_FAILURES = "MODEL_BREAKER_FAILURES"
BREAKER_COOLDOWN = "MODEL_BREAKER_COOLDOWN"
# The challenger of shadow scoring, a BentoML model tag; its share, budget and log folder
# override serve.shadow_rate, serve.shadow_budget_ms and paths.shadow
CHALLENGER = os.environ.get(shadow.VARIABLE) or None
LOG = logging.getLogger(__name__)


SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _switch(variable: str, default: bool) -> bool:
    value = os.environ.get(variable)
    if value is None:
        return default
    if value.lower() not in SWITCH:
        raise PipelineError(f"{variable}={value!r}: use on or off")
    return SWITCH[value.lower()]


def _share(variable: str, default: float) -> float:
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise PipelineError(f"{variable}={value!r}: use a share from 0 to 1")
    return share


def _number(variable: str, default: float | None) -> float | None:
    value = os.environ.get(variable)
    if value is None:
        return default
    if value.lower() in {"null", "none", "off"}:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise PipelineError(f"{variable}={value!r}: use a number of 0 or more (or off)")
    return number


def _model_tag() -> str:
    # A bento does not ship the model directory: its own store holds exactly the one model.
    if (SOURCES.model / "meta.json").exists():
        return store.current_tag(SOURCES)
    return f"{SOURCES.name}:latest"


@bentoml.service(
    name=SOURCES.name,
    workers=SETTINGS.workers,
    threads=SETTINGS.threads,
    traffic={"timeout": SETTINGS.timeout, "max_concurrency": SETTINGS.max_concurrency},
    logging={"access": {"enabled": SETTINGS.access_log}},
    # Matched anywhere in the URL, as OpenTelemetry's excluded_urls are.
    tracing={"excluded_urls": [] if SETTINGS.tracing else API_ROUTES},
)
class ModelService:
    """The task's prediction and explanation for raw records of the schema.

    A binary classifier answers the positive-class probability and a label, a regression a
    value and its interval, a multiclass classifier a label and every class's probability.
    """

    stored = bentoml.models.BentoModel(_model_tag())
    if CHALLENGER is not None:  # a bento built with MODEL_SHADOW set carries it too
        challenger = bentoml.models.BentoModel(CHALLENGER)

    def __init__(self) -> None:
        # A model that cannot be loaded leaves the worker up but unready (``/readyz`` 503): the
        # pod never takes traffic, a rollout stalls and the old pods keep serving. Fallbacks are
        # for a model that fails now and then, not for one that was never there.
        self.chain: fallback.Chain | None = None
        self.unready: str | None = None
        self.shadow: shadow.Shadow | None = None
        try:
            self._load()
        except Exception as error:
            LOG.exception("model %s cannot be loaded: the service stays unready", self.stored.tag)
            self.unready = f"model {self.stored.tag} cannot be loaded: {error}"
        # Everything loaded so far lives as long as the worker: keep it out of the collector's
        # full passes, which otherwise stall a request now and then (p99 at 1 client: 141 -> 37 ms).
        gc.collect()
        gc.freeze()

    def _load(self) -> None:
        reference = type(self).stored
        if reference.stored is None:
            raise PipelineError(
                f"model {reference.tag} is not in the BentoML model store: run "
                "`python -m pipelines.serving.store import` first (`make serve` does)"
            )
        directory = Path(self.stored.path)
        info = self.stored.info.metadata
        self.model = scoring.load_served(directory, info, str(self.stored.tag))
        if self.model.task != TASK:
            raise PipelineError(
                f"model {self.stored.tag} is {self.model.task} but {SOURCES.schema} says "
                f"{TASK}: serve it with the schema it was trained with"
            )
        meta = json.loads((directory / "meta.json").read_text())
        version = str(self.stored.tag.version)
        block = self.model.block
        self.metrics = None
        if _switch(METRICS, SETTINGS.metrics):
            self.metrics = telemetry.ServiceMetrics(
                Profile.read(directory / scoring.REFERENCE_FILE),
                model=block.name,
                version=version,
                info={"mlflow_version": block.version, "git_commit": block.git_commit},
            )
            telemetry.activate(self.metrics)
        self.decisions = None
        if self.metrics is not None and TASK != "regression":
            self.decisions = telemetry.DecisionMetrics.of_model(
                self.metrics, meta, directory / scoring.FAIRNESS_FILE, self.model.classes
            )
        rate = _share(REQUEST_LOG_RATE, SETTINGS.request_log)
        log_dir = Path(os.environ.get(REQUEST_LOG_DIR, load_paths().requests))
        self.request_log = RequestLog(log_dir, rate, version) if rate > 0 else None
        counted = fallback.FallbackMetrics(block.name, version)
        failures = _number(BREAKER_FAILURES, SETTINGS.breaker_failures)
        deadline = _number(DEADLINE_MS, SETTINGS.deadline_ms)
        breaker = fallback.CircuitBreaker(
            failures=int(failures or 1),
            cooldown=_number(BREAKER_COOLDOWN, SETTINGS.breaker_cooldown) or 0.0,
            on_change=counted.state,
        )
        self.chain = fallback.chain_of(
            self.model,
            [
                fallback.baseline_of(directory, self.model, info),
                fallback.prior_of(meta, self.model),
            ],
            breaker=breaker,
            deadline=None if deadline is None else deadline / 1000,
            faults=fallback.Faults.parse(os.environ.get(fallback.FAULT_VARIABLE)),
            metrics=counted,
        )
        if CHALLENGER is not None:
            self.shadow = self._shadow(block.name, version)

    def _shadow(self, name: str, version: str) -> shadow.Shadow | None:
        """The challenger's shadow; None, logged, when it cannot be loaded (the model serves)."""
        stored = self.challenger  # type: ignore[attr-defined]
        try:
            challenger = scoring.load_served(
                Path(stored.path), stored.info.metadata, str(stored.tag), self.model.schema
            )
            if challenger.task != TASK:
                raise PipelineError(f"it is {challenger.task}, the model {TASK}")
        except Exception:
            LOG.exception("challenger %s cannot be loaded: no shadow scoring", CHALLENGER)
            return None
        challenger_version = str(stored.tag.version)
        metrics = None
        if self.metrics is not None:
            metrics = shadow.ShadowMetrics(name, version, challenger_version)
        LOG.warning("shadow scoring with challenger %s", stored.tag)
        return shadow.Shadow.of(
            challenger,
            directory=Path(os.environ.get(shadow.LOG_DIR_VARIABLE, load_paths().shadow)),
            versions=(version, challenger_version),
            rate=_share(shadow.RATE_VARIABLE, SETTINGS.shadow_rate),
            budget_ms=_number(shadow.BUDGET_VARIABLE, SETTINGS.shadow_budget_ms) or 0.0,
            cooldown=_number(BREAKER_COOLDOWN, SETTINGS.breaker_cooldown) or 0.0,
            metrics=metrics,
        )

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded: never while only fallbacks could answer."""
        return self.chain is not None

    # A coroutine: scoring a few rows takes well under a millisecond, less than handing the
    # request to a worker thread and back (measured: 1.5x the throughput of a plain def).
    @bentoml.api(input_spec=Records, output_spec=RESPONSES.predict)
    async def predict(self, records: list[Any]) -> Any:
        """The prediction of the model's task, per record.

        When the model fails, the baseline's (then the prior's): the model block's
        ``fallback`` and the ``X-Model-Fallback`` header say which.
        """
        chain = self._chain()
        rows = [vars(record) for record in records]
        try:
            link, output = chain.score(rows)
        except fallback.ModelUnavailableError as error:  # 503: what failed, Retry-After
            return fallback.unavailable(error)
        model = link.model
        response = model.answer(output)
        if model is not self.model:
            # Counted by model_fallback_total only: a fallback's scores in the model's score
            # bins, decisions or request log would read as drift or decay of the model.
            return fallback.answered_by(link.name, response)
        if self.metrics is not None:
            # monitoring watches one number per row whatever the task (its drift rules, canary)
            # and a multiclass model's predicted class, whose shares the top probability misses
            classes = monitored_class(output, TASK)
            self.metrics.observe(
                rows,
                monitored_score(output, TASK).tolist(),
                None if classes is None else classes.tolist(),
            )
        if self.decisions is not None:
            self.decisions.observe(rows, output, self.model.decided(output))
        log = self.request_log if self.request_log and self.request_log.sampled() else None
        twin = self.shadow if self.shadow and self.shadow.sampled() else None
        if log is not None or twin is not None:
            predictions = response.predictions  # type: ignore[attr-defined]
            answered = [p.model_dump(mode="json") for p in predictions]
            request_id = http.REQUEST_ID.get()
            if log is not None:
                log.write(request_id, rows, answered)
            if twin is not None:  # the challenger scores once the client has its answer
                http.after_response(functools.partial(twin.score, request_id, rows, answered))
        return response

    @bentoml.api(input_spec=Records, output_spec=RESPONSES.explain)
    def explain(self, records: list[Any]) -> BaseModel:
        """Per-feature contributions to each record's margin, with base value and margin.

        No fallback: an explanation of another model than the one that predicts would mislead.
        """
        self._chain()
        return self.model.explain([vars(record) for record in records])

    def _chain(self) -> fallback.Chain:
        """The chain, or a 503 from a worker whose model could not be loaded."""
        if self.chain is None:
            raise ServiceUnavailable(self.unready or "the model is not loaded")
        return self.chain


# The decorator made the class a bentoml.Service; type checkers still see the class.
_service = cast("bentoml.Service[Any]", ModelService)
if sorted(api.route for api in _service.apis.values()) != sorted(API_ROUTES):
    raise PipelineError(f"API_ROUTES {API_ROUTES} must list the service's API routes")
# BentoML reads an API's signature on every call (APIMethod._local_call); with the signature
# kept on the function, inspect.signature returns it at once: 1 us where it took 6.
for _api in _service.apis.values():
    _api.func.__signature__ = inspect.signature(_api.func)  # type: ignore[attr-defined]


def _card() -> bytes:
    """The card stored with the served model (a bento's store holds exactly that model)."""
    reference = _service.inner.stored  # the decorated class's own attribute
    if reference.stored is None:
        raise PipelineError(f"model {reference.tag} is not in the BentoML model store")
    return (Path(reference.stored.path) / store.CARD_FILE).read_bytes()


# Read now, so that a key file that is set but missing or bad stops `bentoml serve` at once.
API_KEYS = keys.ApiKeys.from_environment()
if API_KEYS is not None:  # first: outermost of ours, before the card or any body is read
    _service.add_asgi_middleware(keys.RequireKey, keys=API_KEYS, paths=keys.PROTECTED)
_service.add_asgi_middleware(
    http.Document, path="/card", media_type="text/markdown; charset=utf-8", read=_card
)
_service.add_asgi_middleware(
    http.RequestGuard,
    max_body_bytes=SETTINGS.max_body_bytes,
    routes=API_ROUTES,
)
