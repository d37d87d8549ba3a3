"""The fallback chain without a server: the circuit breaker's states, the chain's order, faults."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core import features, linear
from pipelines.core.io import PipelineError
from pipelines.core.linear import Linear
from pipelines.core.model import BASELINE, load_model
from pipelines.params import RegisterParams, load_section
from pipelines.schema import Schema
from pipelines.serving import fallback, scoring
from pipelines.serving.fallback import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Faults
from tests.support.columns import PARAMS
from tests.support.training import packed_model

MODEL_NAME = load_section("register", RegisterParams, PARAMS).model_name


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock, seen = Clock(), []
    return CircuitBreaker(failures, cooldown, clock=clock, on_change=seen.append), clock, seen


# --- the circuit breaker ------------------------------------------------------------------------


def test_the_breaker_opens_after_that_many_failures_in_a_row() -> None:
    cut, _, seen = breaker(failures=3)
    for _ in range(2):
        assert cut.allows()
        cut.failure()
    cut.success()  # a success in between: the count starts again
    for _ in range(2):
        cut.failure()
    assert cut.state == CLOSED
    assert cut.allows()
    cut.failure()
    assert cut.state == OPEN
    assert not cut.allows()
    assert seen == [OPEN]


def test_an_open_breaker_lets_one_request_try_after_the_cooldown_and_closes_on_success() -> None:
    cut, clock, seen = breaker(failures=1, cooldown=10)
    cut.failure()
    clock.now = 9.9
    assert not cut.allows()
    clock.now = 10.0
    assert cut.allows()  # the trial
    assert cut.state == HALF_OPEN
    assert not cut.allows()  # one trial at a time
    cut.success()
    assert cut.state == CLOSED
    assert cut.allows()
    assert seen == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_trial_opens_the_breaker_for_another_cooldown() -> None:
    cut, clock, seen = breaker(failures=5, cooldown=10)
    for _ in range(5):
        cut.failure()
    clock.now = 12.0
    assert cut.allows()
    cut.failure()  # one failure in half-open is enough, whatever ``failures`` says
    assert cut.state == OPEN
    clock.now = 21.0
    assert not cut.allows()
    clock.now = 22.0
    assert cut.allows()
    assert seen == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_the_breaker_says_how_long_until_it_tries_the_model_again() -> None:
    cut, clock, _ = breaker(failures=1, cooldown=10)
    assert cut.remaining() == 0.0  # closed: the next request tries it
    cut.failure()
    assert cut.remaining() == 10.0
    clock.now = 7.5
    assert cut.remaining() == pytest.approx(2.5)
    clock.now = 12.0
    assert cut.remaining() == 0.0
    assert cut.allows()  # half-open: trying it now
    assert cut.remaining() == 0.0


def test_a_breaker_needs_a_failure_count() -> None:
    with pytest.raises(PipelineError, match="failures >= 1"):
        CircuitBreaker(0, 1.0)


# --- fault injection ----------------------------------------------------------------------------


def test_faults_parse_only_the_documented_forms() -> None:
    assert Faults.parse(None).faults == {}
    assert Faults.parse("").faults == {}
    assert Faults.parse("raise, baseline:raise").faults == {
        "primary": ("raise", None),
        "baseline": ("raise", None),
    }
    assert Faults.parse("slow:250").faults == {"primary": ("slow", 250)}
    assert Faults.parse("prior:raise").faults == {"prior": ("raise", None)}
    for bad in ("explode", "slow", "model:raise", "raise:x", "slow:-1"):
        with pytest.raises(PipelineError, match="MODEL_FAULT"):
            Faults.parse(bad)


def test_no_fault_leaves_the_scoring_function_itself() -> None:
    def output(rows: Any) -> np.ndarray:
        return np.zeros(len(rows))

    assert Faults.parse("baseline:raise").wrap("primary", output) is output


def test_a_counted_fault_recovers_after_its_calls() -> None:
    wrapped = Faults.parse("raise:2").wrap("primary", lambda rows: np.ones(len(rows)))
    for _ in range(2):
        with pytest.raises(fallback.InjectedFaultError):
            wrapped([{}])
    assert wrapped([{}]).tolist() == [1.0]


# --- the chain on real models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(raw: pd.DataFrame, schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XGBoost with its linear baseline and prior, saved as the train stage saves them."""
    return packed_model(raw, schema, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def rows(raw: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in raw[list(schema.features)].head(5).to_dict("records")
    ]


def chain(
    directory: Path, fault: str = "", *, deadline: float | None = None, failures: int = 2
) -> fallback.Chain:
    info = {"name": MODEL_NAME}
    served = scoring.load_served(directory, info, f"{MODEL_NAME}:test")
    meta = load_model(directory).meta
    return fallback.chain_of(
        served,
        [fallback.baseline_of(directory, served, info), fallback.prior_of(meta, served)],
        breaker=CircuitBreaker(failures, 60.0),
        deadline=deadline,
        faults=Faults.parse(fault),
        metrics=None,
    )


def test_the_model_answers_when_it_can_and_no_fallback_is_called(
    packed: Path, rows: list[dict[str, Any]]
) -> None:
    whole = chain(packed)
    called = []
    for link in whole.fallbacks:
        link.output = lambda rows, name=link.name: called.append(name) or np.zeros(len(rows))
    link, output = whole.score(rows)
    assert link.name == "primary"
    assert called == []
    np.testing.assert_array_equal(output, whole.primary.model.output(rows))
    assert link.model.answer(output).model.fallback is None


def test_a_failing_model_falls_back_on_the_baseline_then_the_prior(
    packed: Path, rows: list[dict[str, Any]], schema: Schema
) -> None:
    task = schema.target.task
    link, output = chain(packed, "raise").score(rows)
    assert link.name == "baseline"
    assert isinstance(link.model.scorer.model, Linear)  # NumPy's maths, no DataFrame per call
    baseline = load_model(packed / BASELINE)
    encoded = features.encode(pd.DataFrame(rows), schema)[baseline.meta["features"]]
    np.testing.assert_allclose(output, baseline.predict(encoded), rtol=1e-6)
    answer = link.model.answer(output)
    assert answer.model.fallback == "baseline"
    if task == "binary":  # labels at the baseline's own threshold
        assert answer.model.threshold == pytest.approx(0.3)

    link, output = chain(packed, "raise,baseline:raise").score(rows)
    assert link.name == "prior"
    expected = load_model(packed).meta["prior"]["output"]
    for row in output:
        np.testing.assert_allclose(row, expected)
    answer = link.model.answer(output)
    assert answer.model.fallback == "prior"
    assert len(answer.predictions) == len(rows)


def test_every_link_failing_is_an_error_that_names_each_and_when_to_retry(
    packed: Path, rows: list[dict[str, Any]]
) -> None:
    whole = chain(packed, "raise,baseline:raise,prior:raise", failures=2)
    whole.breaker.clock = clock = Clock()
    with pytest.raises(fallback.ModelUnavailableError) as first:
        whole.score(rows)
    assert first.value.failed == {
        "primary": "raised InjectedFaultError",
        "baseline": "raised InjectedFaultError",
        "prior": "raised InjectedFaultError",
    }
    assert first.value.retry_after == 1  # the breaker is closed: the model may be tried now
    with pytest.raises(fallback.ModelUnavailableError) as second:
        whole.score(rows)
    assert whole.breaker.state == OPEN
    assert second.value.retry_after == 60  # the whole cool-down
    clock.now = 58.2
    with pytest.raises(fallback.ModelUnavailableError) as third:
        whole.score(rows)
    assert third.value.retry_after == 2  # rounded up
    assert third.value.failed["primary"] == "not tried: its circuit breaker is open"


@pytest.fixture(scope="module")
def broken_baseline(packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed model with its baseline's model files cut short."""
    directory = Path(shutil.copytree(packed, tmp_path_factory.mktemp("broken") / "model"))
    meta = json.loads((directory / BASELINE / "meta.json").read_text())
    for name in (meta["file"], linear.FILE):
        model_file = directory / BASELINE / name
        model_file.write_bytes(model_file.read_bytes()[:50])
    return directory


def chain_without_baseline(directory: Path, fault: str) -> fallback.Chain:
    info = {"name": MODEL_NAME}
    served = scoring.load_served(directory, info, f"{MODEL_NAME}:test")
    return fallback.chain_of(
        served,
        [
            fallback.baseline_of(directory, served, info),
            fallback.prior_of(load_model(directory).meta, served),
        ],
        breaker=CircuitBreaker(1, 30.0),
        deadline=None,
        faults=Faults.parse(fault),
        metrics=None,
    )


def test_a_baseline_that_cannot_be_loaded_is_logged_named_and_left_out(
    broken_baseline: Path, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    info = {"name": MODEL_NAME}
    served = scoring.load_served(broken_baseline, info, f"{MODEL_NAME}:test")
    with caplog.at_level(logging.WARNING, logger=fallback.__name__):
        baseline = fallback.baseline_of(broken_baseline, served, info)
    assert baseline == fallback.Unloadable("baseline")
    (record,) = [r for r in caplog.records if "baseline" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert str(broken_baseline / BASELINE) in record.getMessage()
    assert record.exc_info is not None
    assert type(record.exc_info[1]).__name__ in record.getMessage()  # the error, by name
    whole = chain_without_baseline(broken_baseline, "raise")
    assert whole.missing == ["baseline"]
    link, _ = whole.score(rows)
    assert link.name == "prior"


def test_a_model_without_a_baseline_lacks_nothing(packed: Path, tmp_path: Path) -> None:
    """A model trained on Dask has no baseline by design: nothing to count or alert on."""
    directory = Path(shutil.copytree(packed, tmp_path / "model"))
    shutil.rmtree(directory / BASELINE)
    whole = chain_without_baseline(directory, "raise")
    assert [link.name for link in whole.fallbacks] == ["prior"]
    assert whole.missing == []


def test_the_503_body_says_what_failed_and_when_to_retry_and_the_header_agrees(
    broken_baseline: Path, rows: list[dict[str, Any]]
) -> None:
    whole = chain_without_baseline(broken_baseline, "raise,prior:raise")
    with pytest.raises(fallback.ModelUnavailableError) as raised:
        whole.score(rows)
    response = fallback.unavailable(raised.value)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    body = json.loads(response.body)
    assert list(body["failed"].items()) == [
        ("primary", "raised InjectedFaultError"),
        ("baseline", "could not be loaded when the service started"),
        ("prior", "raised InjectedFaultError"),
    ]
    assert body["retry_after"] == 30
    assert "send it again in 30 s" in body["error"]
    assert "Traceback" not in body["error"]


def test_failures_open_the_breaker_and_then_the_model_is_not_called(
    packed: Path, rows: list[dict[str, Any]]
) -> None:
    whole = chain(packed, "raise", failures=2)
    calls = []
    failing = whole.primary.output
    whole.primary.output = lambda rows: calls.append(1) or failing(rows)
    for _ in range(4):
        link, _ = whole.score(rows)
        assert link.name == "baseline"
    assert len(calls) == 2  # then the breaker opened
    assert whole.breaker.state == OPEN


def test_a_late_answer_is_served_but_counts_as_a_failure(
    packed: Path, rows: list[dict[str, Any]]
) -> None:
    whole = chain(packed, "slow:20", deadline=0.005, failures=2)
    first, _ = whole.score(rows)
    assert first.name == "primary"
    assert whole.breaker.consecutive == 1
    whole.score(rows)
    assert whole.breaker.state == OPEN
    link, _ = whole.score(rows)
    assert link.name == "baseline"
