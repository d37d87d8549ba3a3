"""Serving core: request model, fast row encoder, model store, explanations.

The service (``pipelines/service.py``) stays thin; everything it does is a typed function here,
testable without a server. Requests are validated by a strict pydantic model generated from
``schema.yaml`` and encoded straight into a float32 numpy matrix in the model's feature order
(the same columns as :func:`pipelines.featurize.encode`, without a DataFrame per request).

Usage: ``python -m pipelines.serving import`` saves the current model (``paths.model``) into the
local BentoML model store as ``<register.model_name>:<content hash>`` and prints the tag;
importing the same model again changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from pipelines.featurize import feature_names
from pipelines.params import (
    DEFAULT_PARAMS,
    EvaluateParams,
    Paths,
    RegisterParams,
    Section,
    load_paths,
    load_section,
)
from pipelines.schema import Schema, load_schema
from pipelines.stage import PipelineError, run_stage

if TYPE_CHECKING:
    from pipelines.train import LoadedModel

SCHEMA_FILE = "schema.yaml"
LOG = logging.getLogger(__name__)
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class ServeParams(Section):
    """Limits and concurrency of the HTTP service (``serve:`` in params.yaml)."""

    max_batch: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    workers: Annotated[int, Field(ge=1)] | Literal["cpu_count"]
    threads: int = Field(ge=1)
    timeout: float = Field(gt=0)
    max_concurrency: int = Field(ge=1)
    access_log: bool
    tracing: bool


# ---------------------------------------------------------------------------------------------
# Request and response models


def record_model(schema: Schema) -> type[BaseModel]:
    """A strict pydantic model of one raw record: one field per feature of the schema.

    Categories become ``Literal`` values, numeric ranges ``ge``/``le`` bounds, and only a
    feature whose schema allows missing values accepts ``null`` (it must still be present).
    Unknown fields, wrong JSON types (``true`` or ``"3"`` for a number), NaN and infinities
    are errors.
    """
    fields: dict[str, Any] = {}
    for name, feature in schema.features.items():
        annotation: Any
        if feature.type == "category":
            annotation = Literal[tuple(feature.categories or ())]
        else:
            kind = int if feature.type == "integer" else float
            annotation = Annotated[kind, Field(ge=feature.min, le=feature.max)]
        if feature.nullable:
            annotation = annotation | None
        fields[name] = (annotation, Field(description=feature.description or None))
    model: type[BaseModel] = create_model("Record", __config__=STRICT, **fields)
    return model


def request_model(schema: Schema, max_batch: int) -> type[BaseModel]:
    """The body of ``POST /predict`` and ``/explain``: ``{"records": [<1..max_batch records>]}``."""
    record: Any = record_model(schema)
    records: Any = Annotated[list[record], Field(min_length=1, max_length=max_batch)]
    model: type[BaseModel] = create_model("Records", __config__=STRICT, records=(records, ...))
    return model


class ModelBlock(BaseModel):
    """Which model answered: carried by every response."""

    name: str
    version: str | None = Field(description="MLflow registered model version")
    git_commit: str | None
    data_md5: str | None
    mlflow_run_id: str | None
    bento_model_tag: str
    threshold: float


class Prediction(BaseModel):
    """The positive-class probability of one record and its label at the threshold."""

    probability: float
    label: str | int


class PredictResponse(BaseModel):
    """One prediction per record, in order, and the model that made them."""

    predictions: list[Prediction]
    model: ModelBlock


class Explanation(BaseModel):
    """Additive contributions of each raw feature to one record's margin (log-odds).

    ``base + sum(contributions.values()) == margin`` and ``probability == sigmoid(margin)``.
    """

    probability: float
    margin: float
    base: float
    contributions: dict[str, float]


class ExplainResponse(BaseModel):
    """One explanation per record, in order, and the model that made them."""

    explanations: list[Explanation]
    model: ModelBlock


# ---------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class RowEncoder:
    """Encodes validated raw records into the model's float32 matrix, row by row.

    The columns are :func:`pipelines.featurize.feature_names` (numeric features as floats with
    ``None`` as NaN, one 0/1 column per category), in the order the model was trained on.
    """

    columns: tuple[str, ...]
    numeric: tuple[tuple[str, int], ...]
    categorical: tuple[tuple[str, Mapping[Any, int]], ...]

    @classmethod
    def from_schema(cls, schema: Schema, columns: Sequence[str] | None = None) -> RowEncoder:
        """Build the encoder; ``columns`` (the model's feature order) defaults to the schema's.

        Raises:
            PipelineError: ``columns`` are not the columns the schema encodes to.
        """
        expected = feature_names(schema)
        columns = list(columns) if columns is not None else expected
        if sorted(columns) != sorted(expected):
            missing = sorted(set(expected) - set(columns))
            extra = sorted(set(columns) - set(expected))
            raise PipelineError(
                "the model was trained on other features than schema.yaml encodes to "
                f"(the schema adds {missing}, the model has {extra}): retrain the model "
                "(`make repro`) or serve it with the schema it was trained with"
            )
        index = {name: i for i, name in enumerate(columns)}
        numeric = []
        categorical = []
        for name, feature in schema.features.items():
            if feature.type == "category":
                cats = {c: index[f"{name}={c}"] for c in feature.categories or ()}
                categorical.append((name, cats))
            else:
                numeric.append((name, index[name]))
        return cls(tuple(columns), tuple(numeric), tuple(categorical))

    @property
    def width(self) -> int:
        """Number of model columns."""
        return len(self.columns)

    def encode(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode records (mappings of raw feature name to value) into a float32 matrix.

        Raises:
            ValueError: A record lacks a feature or holds an unknown category (records should
                have been validated by :func:`record_model` first).
        """
        nan = float("nan")
        width = self.width
        rows = []
        for position, record in enumerate(records):
            row = [0.0] * width
            try:
                for name, column in self.numeric:
                    value = record[name]
                    row[column] = nan if value is None else value
                for name, categories in self.categorical:
                    row[categories[record[name]]] = 1.0
            except KeyError as error:
                raise ValueError(
                    f"record {position}: missing feature or unknown category {error}"
                ) from None
            rows.append(row)
        return np.array(rows, dtype=np.float32).reshape(len(rows), width)

    def groups(self, schema: Schema) -> tuple[list[str], np.ndarray]:
        """Raw feature names, and a 0/1 matrix (model column x raw feature).

        Multiplying per-column values by it sums each category's one-hot columns into its feature.
        """
        names = list(schema.features)
        matrix = np.zeros((self.width, len(names)), dtype=np.float64)
        position = {name: j for j, name in enumerate(names)}
        for name, column in self.numeric:
            matrix[column, position[name]] = 1.0
        for name, categories in self.categorical:
            for column in categories.values():
                matrix[column, position[name]] = 1.0
        return names, matrix


# ---------------------------------------------------------------------------------------------
# Scoring and explanations


SMALL_BATCH = 8  # rows up to which treelite's evaluator beats XGBoost's per-call overhead
PROBE_TOLERANCE = 1e-6  # float32 sums in another order differ by ~1e-8


@dataclass(frozen=True)
class Scorer:
    """Probabilities, margins and per-column contributions of a loaded model on a float32 matrix.

    XGBoost scores through ``Booster.inplace_predict`` (no DMatrix, no DataFrame); the
    scikit-learn baseline through its pipeline (imputer, scaler, logistic regression).

    A request is mostly one row, where XGBoost 3.2 spends ~0.25 ms (up to 0.5 ms in a busy
    server) setting up each call: it rebuilds its view of all the trees and reads the cgroup
    CPU quota every time. With ``small`` (see :meth:`of`), batches of up to ``SMALL_BATCH`` rows
    go through treelite's tree evaluator instead, ~0.05 ms for one row, the same model
    converted once; larger ones stay with XGBoost, which is faster per row.
    """

    kind: str
    model: Any
    columns: tuple[str, ...]
    small: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def of(cls, loaded: LoadedModel, threads: int | None = None, *, small: bool = False) -> Scorer:
        """The scorer of a model read by :func:`pipelines.train.load_model`.

        Args:
            loaded: The model and its ``meta.json``.
            threads: XGBoost's OpenMP threads; ``None`` keeps its default (all cores).
            small: Also prepare treelite's evaluator for batches of up to ``SMALL_BATCH`` rows
                (what a service wants; batch scoring does not).
        """
        model: Any = loaded.model
        evaluator = None
        if loaded.meta["kind"] == "xgboost":
            model = model.get_booster()
            if threads is not None:
                model.set_param({"nthread": threads})
            if small:
                evaluator = _treelite_evaluator(model)
        return cls(
            kind=loaded.meta["kind"],
            model=model,
            columns=tuple(loaded.meta["features"]),
            small=evaluator,
        )

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probability per row."""
        if self.kind == "xgboost":
            if self.small is not None and len(x) <= SMALL_BATCH:
                return self.small(x)
            # The encoder built x in the booster's column order; skip its per-call name check.
            probability = self.model.inplace_predict(x, validate_features=False)
            return np.asarray(probability, dtype=np.float64)
        return np.asarray(self.model.predict_proba(self._frame(x))[:, 1], dtype=np.float64)

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-column contributions to the margin, the base value and the margin, per row.

        XGBoost: exact tree SHAP values (``pred_contribs``). Logistic regression: coefficient
        times the scaled value; a missing-value indicator column counts towards its feature.

        Returns:
            ``(contributions [rows x columns], base [rows], margin [rows])`` where
            ``base + contributions.sum(axis=1) == margin`` (the log-odds).
        """
        if self.kind == "xgboost":
            from xgboost import DMatrix

            matrix = DMatrix(x, missing=np.nan, feature_names=list(self.columns))
            shap = np.asarray(self.model.predict(matrix, pred_contribs=True), dtype=np.float64)
            margin = np.asarray(self.model.inplace_predict(x, predict_type="margin"))
            return shap[:, :-1], shap[:, -1], margin.astype(np.float64)
        imputer, scaler, regression = (step for _, step in self.model.steps)
        scaled = scaler.transform(imputer.transform(self._frame(x)))
        terms = scaled * regression.coef_[0]
        contributions = terms[:, : len(self.columns)].copy()
        indicator = getattr(imputer, "indicator_", None)
        if indicator is not None:
            for k, column in enumerate(indicator.features_):
                contributions[:, column] += terms[:, len(self.columns) + k]
        base = np.full(len(x), float(regression.intercept_[0]))
        margin = np.asarray(regression.decision_function(scaled), dtype=np.float64)
        return contributions, base, margin

    def _frame(self, x: np.ndarray) -> Any:
        # The baseline was fitted on named columns; scikit-learn warns on every bare array.
        import pandas as pd

        return pd.DataFrame(x, columns=list(self.columns))


def _treelite_evaluator(booster: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """Probabilities of ``booster`` by treelite's evaluator, or None where that is not exact.

    The converted model is checked against XGBoost on probe rows (both sides of splits and the
    missing-value branches); a model treelite cannot convert, or converts differently, is
    served by XGBoost alone, slower but right, with a warning in the log.
    """
    import treelite
    from treelite import gtil

    try:
        converted = treelite.frontend.from_xgboost(booster)
    except treelite.TreeliteError as error:
        LOG.warning("treelite cannot convert this model (%s): XGBoost scores every request", error)
        return None

    def probability(x: np.ndarray) -> np.ndarray:
        return np.asarray(gtil.predict(converted, x, nthread=1), dtype=np.float64).reshape(len(x))

    probe = np.random.default_rng(0).uniform(-1, 100, (64, booster.num_features()))
    probe[::4] = 0.0
    probe[1::4, ::3] = np.nan
    probe = probe.astype(np.float32)
    expected = booster.inplace_predict(probe, validate_features=False)
    one_by_one = np.concatenate([probability(row[None]) for row in probe])
    worst = float(np.max(np.abs(one_by_one - expected)))
    if not worst <= PROBE_TOLERANCE:
        LOG.warning("treelite differs from XGBoost by %.2g: XGBoost scores every request", worst)
        return None
    return probability


# ---------------------------------------------------------------------------------------------
# The served model


@dataclass(frozen=True)
class ServedModel:
    """Everything a request needs: encoder, scorer, threshold, labels and the model block."""

    schema: Schema
    encoder: RowEncoder
    scorer: Scorer
    threshold: float
    positive: str | int
    negative: str | int
    block: ModelBlock
    _groups: tuple[list[str], np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_groups", self.encoder.groups(self.schema))

    def predict(self, records: Sequence[Mapping[str, Any]]) -> PredictResponse:
        """Probabilities and labels for validated records, in order."""
        probabilities = self.scorer.probability(self.encoder.encode(records))
        positive, negative, threshold = self.positive, self.negative, self.threshold
        predictions = [
            Prediction(probability=p, label=positive if p >= threshold else negative)
            for p in probabilities.tolist()
        ]
        return PredictResponse(predictions=predictions, model=self.block)

    def explain(self, records: Sequence[Mapping[str, Any]]) -> ExplainResponse:
        """Per-raw-feature contributions to each record's margin, with base value and margin."""
        x = self.encoder.encode(records)
        contributions, base, margin = self.scorer.contributions(x)
        names, groups = self._groups
        per_feature = contributions @ groups
        probability = 1.0 / (1.0 + np.exp(-margin))
        explanations = [
            Explanation(
                probability=float(probability[i]),
                margin=float(margin[i]),
                base=float(base[i]),
                contributions=dict(zip(names, per_feature[i].tolist(), strict=True)),
            )
            for i in range(len(x))
        ]
        return ExplainResponse(explanations=explanations, model=self.block)


def load_served(directory: Path, info: Mapping[str, Any], tag: str) -> ServedModel:
    """Load a model saved by :func:`import_model` (or a pipeline model dir plus its info).

    Never unpickles: XGBoost reads its UBJSON file, the baseline loads through skops with the
    project's trusted types (:func:`pipelines.train.load_model`).

    Args:
        directory: Holds the model file, ``meta.json`` and ``schema.yaml``.
        info: The model's serving info (see :func:`serving_info`).
        tag: The BentoML model tag, reported in every response.

    Raises:
        PipelineError: The model's features do not match its schema.
    """
    from pipelines.train import load_model

    loaded = load_model(directory)
    schema = load_schema(Path(directory) / SCHEMA_FILE)
    encoder = RowEncoder.from_schema(schema, loaded.meta["features"])
    target = schema.target
    negative = next(value for value in target.values if value != target.positive)  # noqa: PD011
    block = ModelBlock(
        name=info["name"],
        version=info.get("mlflow_version"),
        git_commit=info.get("git_commit"),
        data_md5=info.get("data_md5"),
        mlflow_run_id=info.get("mlflow_run_id"),
        bento_model_tag=tag,
        threshold=info["threshold"],
    )
    return ServedModel(
        schema=schema,
        encoder=encoder,
        # One request is one row or a small batch: OpenMP threads cost more than they give.
        scorer=Scorer.of(loaded, threads=1, small=True),
        threshold=float(info["threshold"]),
        positive=target.positive,
        negative=negative,
        block=block,
    )


# ---------------------------------------------------------------------------------------------
# HTTP guard


Scope = dict[str, Any]
Message = dict[str, Any]
LISTED_PROBLEMS = 50  # a 1000-record batch can hold 20,000 problems: the first ones suffice


def explain_errors(body: bytes) -> bytes | None:
    """Rewrite BentoML's pydantic 400 body into one that names each record and field.

    ``{"detail": [{"loc": ["records", 3, "tenure"], "msg": ...}, ...]}`` becomes
    ``{"error": ..., "detail": "records.3.tenure: ...; ...", "errors": [{"field":
    "records.3.tenure", "record": 3, "message": ..., "type": ...}, ...]}``. ``detail`` is a
    string, as the service's OpenAPI document declares it. Returns None for any other body.
    """
    try:
        document = json.loads(body)
        problems = [
            {
                "field": ".".join(str(part) for part in problem["loc"]) or "body",
                **({"record": problem["loc"][1]} if _names_record(problem["loc"]) else {}),
                "message": problem["msg"],
                "type": problem["type"],
            }
            for problem in document["detail"]
        ]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    count = len(problems)
    problems = problems[:LISTED_PROBLEMS]
    detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    first = f"{problems[0]['field']}: {problems[0]['message']}" if problems else "no detail"
    more = f" (and {count - 1} more, listed in 'errors')" if count > 1 else ""
    error = (
        f'invalid request: {first}{more}. Send {{"records": [...]}} with each record holding '
        "exactly the fields of the schema, with their types and ranges (see /docs.json)."
    )
    if count > len(problems):
        detail += f"; ... {count - len(problems)} more"
    return json.dumps({"error": error, "detail": detail, "errors": problems}).encode()


def _names_record(loc: Sequence[Any]) -> bool:
    return len(loc) >= 2 and loc[0] == "records" and isinstance(loc[1], int)


class RequestGuard:
    """ASGI middleware for the API routes: JSON only (415), bounded size (413), readable 400s.

    The body is read here, up to ``max_body_bytes``, before the service parses anything, so an
    oversized request costs no more than the limit whether or not it declares its length.
    Other routes and methods pass through untouched (BentoML answers them, e.g. 405).
    """

    def __init__(self, app: Any, max_body_bytes: int, routes: Sequence[str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Check a request to an API route, then pass it on with a rewriting ``send``."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type not in (b"application/json", b""):
            await self._not_json(send, media_type.decode("latin-1"))
            return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        if body and not media_type:  # an empty body has no type; it gets the 400 it deserves
            await self._not_json(send, "none")
            return
        await self.app(scope, _replay(bytes(body), receive), _readable_errors(send))

    async def _not_json(self, send: Any, media_type: str) -> None:
        await _reply(
            send,
            415,
            f"unsupported content type {media_type}: send a JSON body with "
            "Content-Type: application/json",
        )

    async def _too_large(self, send: Any) -> None:
        await _reply(
            send,
            413,
            f"request body larger than {self.max_body_bytes} bytes (serve.max_body_bytes): "
            "split the records into smaller requests",
        )


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return dict(await receive())
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _readable_errors(send: Any) -> Any:
    held: Message | None = None
    chunks: list[bytes] = []

    async def rewriting_send(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        body = explain_errors(body) or body
        headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return rewriting_send


class RequestTimeout:
    """``traffic.timeout`` as BentoML answers it (504), with the timer cancelled in time.

    BentoML 1.4's ``TimeoutMiddleware`` schedules a ``loop.call_later(timeout)`` per request and
    never cancels it. The timer holds the request's context (its OpenTelemetry span, lists,
    locks) for ``timeout`` seconds and, under uvloop, in a reference cycle after that: every
    request's objects reach the collector's oldest generation, whose full passes then stall the
    worker for 20-150 ms (measured with 10 s at 500 requests/s: p99 at 8 clients 50-60 ms and
    growing memory between passes). This one cancels its timer when the response starts,
    which is when BentoML's stops counting too; :func:`install_request_timeout` puts it in
    BentoML's place.
    """

    replaces: type  # BentoML's class, once install_request_timeout has run

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Pass the request on; answer 504 if its response has not started within the timeout."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def starting_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # as in BentoML's: a response under way may go on
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, starting_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            await _reply(send, 504, f"Not able to process the request in {self.timeout} seconds")


def install_request_timeout() -> type:
    """Make BentoML build its apps with :class:`RequestTimeout` for ``traffic.timeout``.

    BentoML imports the class from its module when it assembles an app's middleware, so the
    replacement must be in place before the service's app is built (importing
    ``pipelines.service`` does it). Installing twice changes nothing.

    Returns:
        BentoML's own class, the one replaced.

    Raises:
        PipelineError: This BentoML has no such middleware any more; the replacement would
            silently do nothing.
    """
    from bentoml._internal.server.http import traffic

    current = getattr(traffic, "TimeoutMiddleware", None)
    if current is None:
        raise PipelineError(
            "bentoml._internal.server.http.traffic.TimeoutMiddleware is gone: check whether this "
            "BentoML still holds every request for traffic.timeout seconds, then drop "
            "install_request_timeout"
        )
    if current is not RequestTimeout:
        RequestTimeout.replaces = current
        traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc,assignment]
    return RequestTimeout.replaces


async def _reply(send: Any, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# The model in BentoML's store


@dataclass(frozen=True)
class Sources:
    """The files a served model is made of, as params.yaml names them."""

    model: Path
    schema: Path
    registry: Path
    metrics: Path
    data_dvc: Path
    threshold: float
    name: str

    @classmethod
    def from_params(cls, params: Path = DEFAULT_PARAMS) -> Sources:
        """The current model and its metadata files, from ``params.yaml``."""
        paths: Paths = load_paths(params)
        return cls(
            model=paths.model,
            schema=paths.schema_,
            registry=paths.registry,
            metrics=paths.metrics,
            data_dvc=paths.data_dvc,
            threshold=load_section("evaluate", EvaluateParams, params).threshold,
            name=load_section("register", RegisterParams, params).model_name,
        )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def serving_info(sources: Sources) -> dict[str, Any]:
    """What the served model reports about itself, from files only (no git, no network).

    Keys: ``name``, ``threshold``, ``metrics`` and, when the files exist, ``mlflow_version``,
    ``mlflow_run_id``, ``git_commit`` (the commit MLflow recorded for the run) and ``data_md5``.
    """
    from pipelines.register import data_hash

    registry = _read_json(sources.registry)
    info: dict[str, Any] = {
        "name": sources.name,
        "threshold": sources.threshold,
        "metrics": _read_json(sources.metrics),
        "mlflow_version": str(registry["version"]) if "version" in registry else None,
        "mlflow_run_id": registry.get("run_id"),
        "git_commit": registry.get("git_commit"),
        "data_md5": data_hash(sources.data_dvc) if sources.data_dvc.exists() else None,
    }
    return info


def model_files(sources: Sources) -> dict[str, Path]:
    """The files stored with the model: the model file, ``meta.json`` and the schema.

    Raises:
        PipelineError: There is no model directory yet.
    """
    if not (sources.model / "meta.json").exists():
        raise PipelineError(
            f"{sources.model}/meta.json does not exist: train a model first (`make run`)"
        )
    meta = json.loads((sources.model / "meta.json").read_text())
    return {
        meta["file"]: sources.model / meta["file"],
        "meta.json": sources.model / "meta.json",
        SCHEMA_FILE: sources.schema,
    }


def model_version(files: Mapping[str, Path], info: Mapping[str, Any]) -> str:
    """A version derived from the content: the same model and metadata give the same version."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    digest.update(json.dumps(info, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def current_tag(sources: Sources) -> str:
    """The BentoML tag of the current model, ``<name>:<content hash>`` (nothing is written)."""
    return f"{sources.name}:{model_version(model_files(sources), serving_info(sources))}"


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    """BentoML metadata has no null: absent values are left out."""
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in document.items()
        if value is not None
    }


def import_model(sources: Sources) -> str:
    """Save the current model into the local BentoML model store; return its tag.

    A no-op when that exact content is already stored. Labels carry the MLflow version and run,
    the git commit and the data hash; metadata adds the threshold, the test metrics and where
    the schema is inside the model directory.
    """
    import shutil

    import bentoml

    from pipelines.register import git_state

    files = model_files(sources)
    info = serving_info(sources)
    tag = f"{sources.name}:{model_version(files, info)}"
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        return tag
    # Without an MLflow record, the commit the model is imported from is the best provenance.
    commit = info["git_commit"] or git_state()["git_commit"]
    labels = {
        key: str(value)
        for key, value in {
            "mlflow_version": info["mlflow_version"],
            "mlflow_run_id": info["mlflow_run_id"],
            "git_commit": commit,
            "data_md5": info["data_md5"],
        }.items()
        if value is not None
    }
    metadata = _without_none({**info, "git_commit": commit, "schema": SCHEMA_FILE})
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as stored:
        for name, source in files.items():
            shutil.copyfile(source, stored.path_of(name))
    return tag


def main(argv: list[str] | None = None) -> int:
    """``import``: put the current model into the BentoML model store and print its tag."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["import"])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    # Offline first: BentoML would otherwise report usage over the network.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    print(import_model(Sources.from_params(args.params)))
    return 0


if __name__ == "__main__":
    run_stage(main)
