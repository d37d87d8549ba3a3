"""The serving core without a server: request model, row encoder, scoring, explanations."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import gc
import json
import math
import re
import weakref
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvloop
from pydantic import ValidationError

from pipelines.core import features
from pipelines.core.io import PipelineError
from pipelines.core.linear import Linear
from pipelines.core.model import save_model
from pipelines.params import RegisterParams, load_paths, load_section
from pipelines.schema import Feature, Rows, Schema, Target
from pipelines.serving import api, http, scoring
from pipelines.serving import telemetry as metrics
from tests.support.columns import (
    PARAMS,
    ROOT,
    UNKNOWN_COLUMN,
    above,
    below,
    case,
    fraction,
    inside,
    negative_class,
    project_schema,
    unknown_category,
)
from tests.support.floats import EPS32, logit_tolerance, saturation_margin, sum_tolerance
from tests.support.serving import assert_predictions_match, expected_predictions
from tests.support.training import (
    HALF_WIDTH,
    Trained,
    fit_on,
    model_kind,
    saved_meta,
    small_train_params,
)

SCHEMA = project_schema()
MODEL_NAME = load_section("register", RegisterParams, PARAMS).model_name


def as_records(rows: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows[list(schema.features)].to_dict("records")
    ]


@pytest.fixture(scope="module")
def sample(raw: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The first rows, a row with each category of each feature, and the rows with nulls."""
    picked = list(raw.index[:300])
    for name, feature in schema.features.items():
        for category in feature.categories or ():
            picked += list(raw.index[raw[name] == category][:1])
    picked += list(raw.index[raw[list(schema.features)].isna().any(axis=1)])
    return raw.loc[sorted(set(picked))]


# --- request model -----------------------------------------------------------------------------


def test_the_record_model_accepts_real_rows(sample: pd.DataFrame, schema: Schema) -> None:
    request = api.request_model(schema, max_batch=len(sample))
    parsed = request.model_validate_json(json.dumps({"records": as_records(sample, schema)}))
    assert len(parsed.records) == len(sample)  # type: ignore[attr-defined]


# Each case: a feature of a kind picked from the schema, and a value its record must refuse.
BAD_VALUES = [
    case(SCHEMA, "integer-as-text", "integer", value=lambda f: str(inside(f))),
    case(SCHEMA, "integer-as-bool", "integer", value=lambda f: True),
    case(SCHEMA, "integer-with-a-fraction", "integer", value=fraction),
    case(SCHEMA, "integer-below-min", "integer", low=True, value=below),
    case(SCHEMA, "integer-above-max", "integer", high=True, value=above),
    case(SCHEMA, "integer-null", "integer", nullable=False, value=lambda f: None),
    case(SCHEMA, "number-as-text", "number", value=lambda f: str(float(inside(f)))),
    case(SCHEMA, "number-as-bool", "number", value=lambda f: False),
    case(SCHEMA, "number-nan", "number", value=lambda f: float("nan")),
    case(SCHEMA, "number-infinite", "number", value=lambda f: float("inf")),
    case(SCHEMA, "number-below-min", "number", low=True, value=below),
    case(SCHEMA, "number-above-max", "number", high=True, value=above),
    case(SCHEMA, "number-null", "number", nullable=False, value=lambda f: None),
    case(SCHEMA, "unknown-category", "category", value=unknown_category),
    case(SCHEMA, "category-as-number", "category", value=lambda f: 1),
    case(SCHEMA, "category-null", "category", nullable=False, value=lambda f: None),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_the_record_model_rejects_bad_values(
    sample: pd.DataFrame, schema: Schema, field: str, value: Any
) -> None:
    record = as_records(sample.head(1), schema)[0] | {field: value}
    with pytest.raises(ValidationError) as caught:
        api.record_model(schema).model_validate(record)
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        case(SCHEMA, "integer-at-min", "integer", low=True, value=inside),
        case(SCHEMA, "integer-at-max", "integer", high=True, value=lambda f: int(f.max or 0)),
        case(SCHEMA, "number-at-min", "number", low=True, value=lambda f: float(f.min or 0)),
        case(SCHEMA, "number-at-max", "number", high=True, value=lambda f: float(f.max or 0)),
        case(SCHEMA, "number-as-integer", "number", low=True, value=lambda f: int(f.min or 0)),
        case(SCHEMA, "last-category", "category", value=lambda f: (f.categories or ())[-1]),
        case(SCHEMA, "null-where-allowed", nullable=True, value=lambda f: None),
    ],
)
def test_the_record_model_accepts_edge_values(
    sample: pd.DataFrame, schema: Schema, field: str, value: Any
) -> None:
    record = as_records(sample.head(1), schema)[0] | {field: value}
    parsed = api.record_model(schema).model_validate(record)
    assert parsed.model_dump()[field] == value


def test_the_record_model_rejects_unknown_and_missing_fields(
    sample: pd.DataFrame, schema: Schema
) -> None:
    record = as_records(sample.head(1), schema)[0]
    model = api.record_model(schema)
    with pytest.raises(ValidationError) as caught:
        model.model_validate(record | {UNKNOWN_COLUMN: 1})
    assert caught.value.errors()[0]["loc"] == (UNKNOWN_COLUMN,)
    for name in (next(iter(schema.features)), list(schema.features)[-1]):
        with pytest.raises(ValidationError) as caught:
            model.model_validate({k: v for k, v in record.items() if k != name})
        assert caught.value.errors()[0]["loc"] == (name,)
        assert caught.value.errors()[0]["type"] == "missing"


def test_only_nullable_features_accept_null(schema: Schema) -> None:
    properties = api.record_model(schema).model_json_schema()["properties"]
    assert list(properties) == list(schema.checked)
    nullable = {
        name
        for name, spec in properties.items()
        if any(option.get("type") == "null" for option in spec.get("anyOf", []))
    }
    # an audit column may be left out or null: the model never reads it
    assert nullable == {name for name, f in schema.features.items() if f.nullable} | set(
        schema.audit
    )
    for name, feature in schema.checked.items():
        spec = properties[name]
        if feature.nullable or name in schema.audit:
            (spec,) = [option for option in spec["anyOf"] if option.get("type") != "null"]
        if feature.type == "category":
            assert spec["enum"] == list(feature.categories or ()), name
        else:
            assert spec["type"] == ("integer" if feature.type == "integer" else "number"), name
            assert spec.get("minimum") == feature.min, name
            assert spec.get("maximum") == feature.max, name


def with_audit(schema: Schema) -> tuple[Schema, str]:
    """The schema with its first bounded numeric feature moved to ``audit:``, and its name."""
    name = next(n for n, f in schema.features.items() if f.type != "category" and f.max)
    features = {n: f for n, f in schema.features.items() if n != name}
    audit = schema.audit | {name: schema.features[name]}
    return schema.model_copy(update={"features": features, "audit": audit}), name


def test_an_audit_column_is_optional_checked_when_sent_and_never_encoded(
    sample: pd.DataFrame, schema: Schema
) -> None:
    audited, name = with_audit(schema)
    record = as_records(sample.head(1), schema)[0]
    model = api.record_model(audited)

    assert (
        model.model_validate({k: v for k, v in record.items() if k != name}).model_dump()[name]
        is None
    )
    assert model.model_validate(record).model_dump()[name] == record[name]
    with pytest.raises(ValidationError) as caught:
        model.model_validate(record | {name: above(audited.audit[name])})
    assert caught.value.errors()[0]["loc"] == (name,)

    assert name not in features.feature_names(audited)
    encoder = scoring.RowEncoder.from_schema(audited)
    without = {k: v for k, v in record.items() if k != name}
    assert encoder.encode([record]).tolist() == encoder.encode([without]).tolist()


@pytest.mark.parametrize("count", [0, 4])
def test_the_request_bounds_the_number_of_records(
    sample: pd.DataFrame, schema: Schema, count: int
) -> None:
    request = api.request_model(schema, max_batch=3)
    with pytest.raises(ValidationError) as caught:
        request.model_validate({"records": as_records(sample.head(count), schema)})
    assert caught.value.errors()[0]["loc"] == ("records",)


# --- encoder -----------------------------------------------------------------------------------


def test_the_encoder_equals_the_pipelines_encode(sample: pd.DataFrame, schema: Schema) -> None:
    expected = features.encode(sample, schema)
    encoder = scoring.RowEncoder.from_schema(schema)
    x = encoder.encode(as_records(sample, schema))
    assert x.dtype == np.float32
    assert list(encoder.columns) == list(expected.columns)
    np.testing.assert_array_equal(x, expected.to_numpy())
    for name, feature in schema.features.items():
        if feature.type != "category":  # missing numbers stay missing, for the trees to route
            column = x[:, encoder.columns.index(name)]
            assert np.isnan(column).sum() == sample[name].isna().sum(), name


def test_the_encoder_takes_null_in_every_nullable_kind_as_encode_does() -> None:
    """Whatever kinds the project's schema has: a nullable category, number and integer."""
    schema = Schema(
        target=Target(column="Loan Status", positive="bad", values=("good", "bad")),
        id="row id",
        rows=Rows(min=1, max=10),
        features={
            "Home.Type": Feature(type="category", categories=("own", "rent"), max_null_fraction=1),
            "Monthly Income": Feature(type="number", min=0, max=10, max_null_fraction=1),
            "Ünits-Held": Feature(type="integer", min=0, max=9, max_null_fraction=1),
        },
    )
    records = [
        {"Home.Type": "rent", "Monthly Income": 2.5, "Ünits-Held": 3},
        {"Home.Type": None, "Monthly Income": None, "Ünits-Held": None},
        {"Home.Type": "own", "Monthly Income": None, "Ünits-Held": 0},
    ]
    assert [api.record_model(schema).model_validate(r).model_dump() for r in records] == records
    x = scoring.RowEncoder.from_schema(schema).encode(records)
    expected = features.encode(pd.DataFrame(records), schema).to_numpy()
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(x[1], [0, 0, np.nan, np.nan])


def test_the_encoder_follows_the_models_column_order(sample: pd.DataFrame, schema: Schema) -> None:
    shuffled = list(reversed(features.feature_names(schema)))
    x = scoring.RowEncoder.from_schema(schema, shuffled).encode(as_records(sample, schema))
    np.testing.assert_array_equal(x, features.encode(sample, schema)[shuffled].to_numpy())


def test_the_encoder_refuses_a_model_of_other_features(schema: Schema) -> None:
    columns = [*features.feature_names(schema)[:-1], UNKNOWN_COLUMN]
    with pytest.raises(PipelineError, match=re.escape(UNKNOWN_COLUMN)):
        scoring.RowEncoder.from_schema(schema, columns)


@pytest.mark.parametrize(
    ("field", "value"), [case(SCHEMA, "unknown-category", "category", value=unknown_category)]
)
def test_the_encoder_names_the_record_with_an_unknown_category(
    sample: pd.DataFrame, schema: Schema, field: str, value: Any
) -> None:
    records = as_records(sample.head(3), schema)
    records[2][field] = value
    with pytest.raises(ValueError, match="record 2"):
        scoring.RowEncoder.from_schema(schema).encode(records)


@pytest.mark.parametrize("position", [0, -1], ids=["first-feature", "last-feature"])
def test_the_encoder_names_the_record_missing_a_feature(
    sample: pd.DataFrame, schema: Schema, position: int
) -> None:
    records = as_records(sample.head(3), schema)
    del records[1][list(schema.features)[position]]
    with pytest.raises(ValueError, match="record 1"):
        scoring.RowEncoder.from_schema(schema).encode(records)


# --- scoring and explanations, both model kinds -------------------------------------------------


@pytest.fixture(scope="module", params=["xgboost", "linear"])
def served(
    request: pytest.FixtureRequest,
    raw: pd.DataFrame,
    schema: Schema,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[scoring.ServedModel, Trained]:
    """XGBoost or the task's linear baseline, saved as the train stage saves it, served."""
    kind = model_kind(request.param, schema.target.task)
    trained = fit_on(raw, schema, small_train_params(kind))
    directory = tmp_path_factory.mktemp("model") / "model"
    save_model(trained.model, kind, saved_meta(schema, list(trained.x_test.columns)), directory)
    (directory / scoring.SCHEMA_FILE).write_text((ROOT / load_paths(PARAMS).schema_).read_text())
    info = {"name": MODEL_NAME}  # the threshold is the model's own (saved_meta's 0.4)
    return scoring.load_served(directory, info, f"{MODEL_NAME}:test"), trained


def test_predictions_equal_the_models_in_the_tasks_shape(
    served: tuple[scoring.ServedModel, Trained], schema: Schema
) -> None:
    """A binary label follows the threshold, a multiclass one is the most probable class, a
    regression's interval is the prediction -/+ the half-width in meta.json."""
    model, trained = served
    response = model.predict(as_records(trained.test_raw, schema)).model_dump(mode="json")
    expected = expected_predictions(
        trained.predict(trained.test_raw, schema), schema, threshold=0.4, half_width=HALF_WIDTH
    )
    # float32 rows in: ~1e-7 of a probability, relative ~1e-7 of a regression's value
    rtol = 1e-6 if schema.target.task == "regression" else 1e-7
    assert_predictions_match(response["predictions"], expected, rtol, atol=1e-6)
    assert response["model"]["name"] == MODEL_NAME
    assert response["model"].get("threshold") == (0.4 if schema.target.task == "binary" else None)
    assert response["model"]["bento_model_tag"] == f"{MODEL_NAME}:test"
    # a linear model is served by NumPy's maths of its numbers (pipelines.core.linear)
    assert isinstance(model.scorer.model, Linear) == (model.scorer.kind != "xgboost")


def test_binary_labels_follow_the_served_probability_and_the_threshold(
    served: tuple[scoring.ServedModel, Trained], schema: Schema
) -> None:
    """Even where the served probability and the model's differ in the last bits."""
    if schema.target.task != "binary":
        pytest.skip(f"the schema has no binary target (a {schema.target.task} one): no threshold")
    model, trained = served
    response = model.predict(as_records(trained.test_raw, schema))
    p = np.array([x.probability for x in response.predictions])
    positive, negative = schema.target.positive, negative_class(schema)
    assert [x.label for x in response.predictions] == [
        positive if q >= 0.4 else negative for q in p
    ]


def test_a_probability_equal_to_the_threshold_gets_the_positive_label(
    served: tuple[scoring.ServedModel, Trained], schema: Schema
) -> None:
    if schema.target.task != "binary":
        pytest.skip(f"the schema has no binary target (a {schema.target.task} one): no threshold")
    model, trained = served
    records = as_records(trained.test_raw.head(21), schema)
    p = [x.probability for x in model.predict(records).predictions]
    middle = float(np.median(p))  # of an odd number of rows: the probability of one of them
    row = p.index(middle)
    at = dataclasses.replace(model, threshold=middle).predict(records).predictions
    above = dataclasses.replace(model, threshold=math.nextafter(middle, 1)).predict(records)
    assert at[row].probability == middle  # the same row scored again, to the last bit
    assert at[row].label == schema.target.positive
    assert above.predictions[row].label != schema.target.positive
    assert [x.label == schema.target.positive for x in at] == [q >= middle for q in p]


def estimator_margins(trained: Trained, rows: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Each class's score before the softmax, per row, by the fitted estimator's own means."""
    x = features.encode(rows, schema)
    if trained.params.model == "xgboost":
        return np.asarray(trained.model.predict(x, output_margin=True), dtype=np.float64)
    return np.asarray(trained.model.decision_function(x), dtype=np.float64)


def test_explanations_add_up_to_the_margin(
    served: tuple[scoring.ServedModel, Trained], schema: Schema
) -> None:
    """Binary: the log-odds of the probability; multiclass: the predicted class's score before
    the softmax; regression: the prediction."""
    model, trained = served
    task = schema.target.task
    rows = pd.concat([trained.test_raw.head(20), trained.test_raw.tail(5)])
    explained = model.explain(as_records(rows, schema)).explanations
    p = np.asarray(trained.predict(rows, schema))
    margins = estimator_margins(trained, rows, schema) if task == "multiclass" else None
    columns = trained.x_test.shape[1] + 1  # the terms a margin sums, the base among them
    for i, (explanation, q) in enumerate(zip(explained, p, strict=True)):
        assert list(explanation.contributions) == list(schema.features)
        parts = [explanation.base, *explanation.contributions.values()]
        summed = sum_tolerance(parts, columns)
        if task == "regression":
            assert sum(parts) == pytest.approx(explanation.prediction, abs=summed, rel=4 * EPS32)
            assert explanation.prediction == pytest.approx(float(q), abs=1e-5, rel=1e-6)
            continue
        assert sum(parts) == pytest.approx(explanation.margin, abs=summed, rel=4 * EPS32)
        if margins is not None:
            top = list(schema.target.labels).index(explanation.label)
            assert top == int(np.argmax(q))
            assert explanation.margin == pytest.approx(
                float(margins[i, top]), abs=summed + 1e-5, rel=4 * EPS32
            )
        elif 0 < q < 1:
            margin = float(np.log(q) - np.log1p(-q))
            off = logit_tolerance(float(q), p.dtype) + summed
            assert explanation.margin == pytest.approx(margin, abs=off, rel=4 * EPS32)
        else:  # the probability saturated: the margin lies beyond the last one it can store
            assert explanation.margin * (1 if q == 1 else -1) > saturation_margin(p.dtype) - 1


def test_small_requests_are_scored_by_treelite_as_xgboost_scores_them(
    served: tuple[scoring.ServedModel, Trained], schema: Schema
) -> None:
    model, trained = served
    scorer = model.scorer
    if scorer.kind != "xgboost":
        assert scorer.small is None
        return
    assert scorer.small is not None
    x = model.encoder.encode(as_records(trained.test_raw, schema))
    whole = scorer.model.inplace_predict(x)  # XGBoost, every row in one call
    # float32 sums in another order: ~1e-8 of a probability, ~1e-6 of a value near 10
    rtol = 1e-6 if schema.target.task == "regression" else 0
    for size in (1, 3, scoring.SMALL_BATCH):
        parts = [scorer.output(x[i : i + size]) for i in range(0, len(x), size)]
        np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6, rtol=rtol)
    # The small path really is treelite's: the same numbers, not XGBoost's again.
    np.testing.assert_array_equal(scorer.output(x[:1]), scorer.small(x[:1]))
    assert len(scorer.output(x[: scoring.SMALL_BATCH + 1])) == scoring.SMALL_BATCH + 1


# --- request observer --------------------------------------------------------------------------


def observe_one(
    app: Any, headers: list[tuple[bytes, bytes]] | None = None, path: str = "/predict"
) -> tuple[list[dict[str, Any]], list[tuple[str, int, float, str]], str]:
    """One request through RequestObserver around ``app``: what it sent, observed and named."""
    sent: list[dict[str, Any]] = []
    seen: list[tuple[str, int, float, str]] = []
    names: list[str] = []

    async def named_app(scope: Any, receive: Any, send: Any) -> None:
        names.append(http.REQUEST_ID.get())
        await app(scope, receive, send)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    http.RequestObserver.routes = frozenset({"/predict"})
    http.RequestObserver.observe = lambda *args: seen.append(args)
    try:
        middleware = http.RequestObserver(named_app, timeout=0.05)
        scope = {"type": "http", "path": path, "headers": headers or []}
        with contextlib.suppress(RuntimeError):
            asyncio.run(middleware(scope, None, send))
    finally:
        http.RequestObserver.routes = frozenset()
        http.RequestObserver.observe = None
    return sent, seen, names[0] if names else ""


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 429, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _slow(scope: Any, receive: Any, send: Any) -> None:
    await _respond(send, delay_before=1.0)


async def _broken(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the app failed before answering")


@pytest.mark.parametrize(
    ("app", "status"),
    [(_overloaded, 429), (_slow, 504), (_broken, 500)],
    ids=["limit", "timeout", "crash"],
)
def test_the_observer_reports_what_the_client_got(app: Any, status: int) -> None:
    sent, seen, _ = observe_one(app)
    ((route, observed, seconds, key),) = seen
    assert (route, observed, key) == ("/predict", status, "")  # no key checked
    assert 0 <= seconds < 5
    if sent:
        assert sent[0]["status"] == status


def test_the_observer_names_each_request_in_its_response_and_context() -> None:
    sent, _, name = observe_one(_overloaded)
    assert (b"x-request-id", name.encode()) in sent[0]["headers"]
    assert len(name) == 16
    _, _, other = observe_one(_overloaded)
    assert other != name
    sent, _, mine = observe_one(_overloaded, headers=[(b"x-request-id", b"order-7")])
    assert mine == "order-7"
    _, _, unsafe = observe_one(_overloaded, headers=[(b"x-request-id", b"a\nb")])
    assert unsafe != "a\nb"


def test_the_observer_leaves_other_routes_alone() -> None:
    sent, seen, _ = observe_one(_overloaded, path="/metrics")
    assert seen == []
    assert all(name != b"x-request-id" for name, _ in sent[0]["headers"])


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (400, "invalid"),
        (401, "unauthorized"),
        (404, "invalid"),
        (413, "too_large"),
        (415, "unsupported_type"),
        (429, "overloaded"),
        (500, "error"),
        (503, "error"),
        (504, "timeout"),
    ],
)
def test_each_status_has_its_outcome(status: int, outcome: str) -> None:
    assert metrics.outcome(status) == outcome


# --- request timeout ---------------------------------------------------------------------------


async def _respond(send: Any, delay_before: float = 0.0, delay_after: float = 0.0) -> None:
    await asyncio.sleep(delay_before)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(delay_after)
    await send({"type": "http.response.body", "body": b"{}"})


def run_timeout(timeout: float, delay_before: float, delay_after: float) -> list[dict[str, Any]]:
    """One request through RequestTimeout around an app with the given delays; what it sent."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _respond(send, delay_before, delay_after)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = http.RequestTimeout(app, timeout=timeout)
    asyncio.run(middleware({"type": "http"}, None, send))
    return sent


def test_a_request_that_does_not_start_its_response_in_time_gets_504() -> None:
    sent = run_timeout(0.05, delay_before=1.0, delay_after=0.0)
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {
        "error": "Not able to process the request in 0.05 seconds"  # BentoML's own words
    }


def test_a_response_under_way_is_not_cut_by_the_timeout() -> None:
    sent = run_timeout(0.05, delay_before=0.0, delay_after=0.2)
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[1]["body"] == b"{}"


class _Span:
    """Stands for what the middleware outside the timeout puts in the request's context."""


SPAN: contextvars.ContextVar[_Span] = contextvars.ContextVar("span")


def request_context_outlives_the_request(middleware: Any) -> bool:
    """Whether a request's context is still referenced once its response has been sent."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _respond(send)

    async def send(message: dict[str, Any]) -> None:
        pass

    async def one_request() -> weakref.ref[_Span]:
        span = _Span()
        SPAN.set(span)
        await middleware(app, timeout=60)({"type": "http"}, None, send)
        return weakref.ref(span)

    async def server() -> bool:
        # A task per request, with its own context, as uvicorn runs them.
        reference = await asyncio.create_task(one_request())
        for _ in range(3):  # let the loop drop the finished task's wake-up call
            await asyncio.sleep(0)
        gc.collect()
        return reference() is not None

    # The service's loop. (asyncio's own keeps a cancelled timer, and what it holds, until its
    # next purge of cancelled timers: bounded, but not at once.)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(server())


def test_the_timeout_lets_go_of_the_request_once_it_is_answered() -> None:
    assert not request_context_outlives_the_request(http.RequestTimeout)


def test_bentomls_own_timeout_still_holds_every_request_for_the_whole_timeout() -> None:
    """The reason for RequestTimeout. If this fails, BentoML fixed it: drop the replacement."""
    assert request_context_outlives_the_request(http.install_request_timeout())


# --- HTTP guard --------------------------------------------------------------------------------


def test_validation_errors_are_rewritten_to_name_record_and_field() -> None:
    body = json.dumps(
        {
            "error": "2 validation errors",
            "detail": [
                {"type": "missing", "loc": ["records", 3, "Ünits Held"], "msg": "Field required"},
                {"type": "json_invalid", "loc": [], "msg": "Invalid JSON"},
            ],
        }
    ).encode()
    rewritten = json.loads(http.explain_errors(body) or b"")
    assert rewritten["error"].startswith("invalid request: records.3.Ünits Held: Field required")
    assert rewritten["detail"] == "records.3.Ünits Held: Field required; body: Invalid JSON"
    assert rewritten["errors"][0]["record"] == 3
    assert "record" not in rewritten["errors"][1]
    assert http.explain_errors(b'{"error": "task_id is required"}') is None


def run_guard(body: bytes, headers: list[tuple[bytes, bytes]], path: str = "/predict") -> int:
    """Send one request through the guard around an app that echoes 200; return the status."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = http.RequestGuard(app, max_body_bytes=1024, routes=["/predict"])
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return int(sent[0]["status"])


JSON = [(b"content-type", b"application/json; charset=utf-8")]


@pytest.mark.parametrize(
    ("body", "headers", "path", "status"),
    [
        (b"{}", JSON, "/predict", 200),
        (b"", [], "/predict", 200),  # no body, no type: the service's own 400 follows
        (b"{}", [], "/predict", 415),
        (b"{}", [(b"content-type", b"multipart/form-data")], "/predict", 415),
        (b"{}", [(b"content-type", b"text/plain")], "/predict", 415),
        (b" " * 1025, JSON, "/predict", 413),  # chunked, no length declared
        (b"{}", [*JSON, (b"content-length", b"99999")], "/predict", 413),
        (b"{}", [*JSON, (b"content-length", b"-1")], "/predict", 413),
        (b"x" * 2000, [(b"content-type", b"text/plain")], "/metrics", 200),  # not an API
    ],
)
def test_the_guard(body: bytes, headers: list[tuple[bytes, bytes]], path: str, status: int) -> None:
    assert run_guard(body, headers, path) == status
