"""Faults injected into a real `bentoml serve`: what the client gets and what /metrics says.

Each fault gets its own server of the session's trained model (one worker, so that one circuit
breaker sees every request), started with ``MODEL_FAULT`` (the test hook of
``pipelines.serving.fallback``) and a breaker of 2 failures and a 2-second cool-down. A broken
model file gets a copy of the session's BentoML home with that file cut short.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.core import features
from pipelines.core.model import BASELINE, load_model, loaded_files
from pipelines.params import Paths
from pipelines.schema import Schema
from pipelines.serving import fallback, names, telemetry
from tests.support.serving import (
    Server,
    assert_predictions_match,
    expected_predictions,
    records,
    start,
)
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow  # a server per fault, on the session's trained model

FAILURES, COOLDOWN = 2, 2.0
ROWS = 5


@pytest.fixture
def faulty(
    project: ScratchRepo, bentoml_env: dict[str, str], tag: str, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """``faulty(fault, home=None, ready="/readyz", **env)``: a server of the session's model.

    ``home`` is a BentoML home to serve from instead of the session's (a copy with some files
    cut short, :func:`cut_short`). Every server started is stopped after the test.
    """
    name = tag.split(":", maxsplit=1)[0]
    started: list[Server] = []

    def start_with(
        fault: str, home: Path | None = None, ready: str = "/readyz", **extra: str
    ) -> Server:
        env = bentoml_env | {
            "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {name: {"workers": 1}}}),
            fallback.FAULT_VARIABLE: fault,
            "MODEL_BREAKER_FAILURES": str(FAILURES),
            "MODEL_BREAKER_COOLDOWN": str(COOLDOWN),
            **extra,
        }
        if home is not None:
            env["BENTOML_HOME"] = str(home)
        log = tmp_path / f"serve-{len(started)}.log"
        started.append(start(project, env, tag, log, ready))
        return started[-1]

    yield start_with
    for server in started:
        server.stop()


@pytest.fixture
def cut_short(
    bentoml_env: dict[str, str], tag: str, tmp_path: Path
) -> Callable[[str, Callable[[Path], list[str]]], tuple[Path, Path]]:
    """``cut_short(folder, files)``: a copy of the session's BentoML home where ``files(model)``
    of the stored model's ``folder`` (``""``: the model itself) are cut to their first 100 bytes.

    It returns the copied home and the folder whose files were cut.
    """

    def cut(folder: str, files: Callable[[Path], list[str]]) -> tuple[Path, Path]:
        home = Path(shutil.copytree(bentoml_env["BENTOML_HOME"], tmp_path / "bentoml"))
        name, version = tag.split(":")
        stored = home / "models" / name / version / folder
        for file in files(stored):
            (stored / file).write_bytes((stored / file).read_bytes()[:100])
        return home, stored

    return cut


@pytest.fixture(scope="module")
def body(test_rows: pd.DataFrame, project_schema: Schema) -> dict[str, Any]:
    return {"records": records(test_rows.head(ROWS), project_schema)}


def predict(server: Server, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{server.url}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


def scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The chain's samples of /metrics by name, keyed by their labels but model and version."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {
                k: v
                for k, v in sample.labels.items()
                if k not in {names.MODEL, names.MODEL_VERSION}
            }
            samples.setdefault(sample.name, {})[tuple(sorted(labels.items()))] = sample.value
    return samples


def counted(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name][tuple(sorted(labels.items()))])


def expected(paths: Paths, schema: Schema, body: dict[str, Any], link: str) -> list[dict[str, Any]]:
    """What the baseline or the prior answers for the body, from the trained model's files."""
    meta = load_model(paths.model).meta
    if link == fallback.PRIOR:
        prior = meta["prior"]
        output = np.repeat(np.asarray(prior["output"], dtype=np.float64)[None], ROWS, axis=0)
        return expected_predictions(
            output,
            schema,
            threshold=float(meta.get("decision", {}).get("threshold", 0.5)),
            half_width=float(prior.get("half_width", 0.0)),
        )
    baseline = load_model(paths.model / BASELINE)
    encoded = features.encode(pd.DataFrame(body["records"]), schema)
    return expected_predictions(
        baseline.predict(encoded),
        schema,
        threshold=baseline.threshold,
        half_width=baseline.half_width(),
    )


def assert_answered_by(
    response: httpx.Response, link: str | None, paths: Paths, schema: Schema, body: dict[str, Any]
) -> None:
    answer = response.json()
    assert response.headers.get(fallback.HEADER) == link
    assert answer["model"]["fallback"] == link
    if link is not None:
        assert_predictions_match(
            answer["predictions"], expected(paths, schema, body, link), rtol=1e-5, atol=1e-6
        )


# --- the model raises: the baseline answers, the breaker opens, half-opens and closes ---------


def test_a_raising_model_is_answered_for_by_the_baseline_until_the_breaker_closes(
    faulty: Callable[..., Server], body: dict[str, Any], paths: Paths, project_schema: Schema
) -> None:
    recovering = faulty("raise:3")  # the model's first three scoring calls raise

    def state() -> float:
        return counted(scrape(recovering), names.BREAKER_STATE)

    for _ in range(FAILURES):  # each raises: the baseline answers
        assert_answered_by(predict(recovering, body), "baseline", paths, project_schema, body)
    assert state() == fallback.STATE_VALUES[fallback.OPEN]
    # open: the model is not called (its third failure is still to come)
    assert_answered_by(predict(recovering, body), "baseline", paths, project_schema, body)
    time.sleep(COOLDOWN + 0.2)
    # half-open: the trial calls the model, which raises a third time: open again
    assert_answered_by(predict(recovering, body), "baseline", paths, project_schema, body)
    assert state() == fallback.STATE_VALUES[fallback.OPEN]
    time.sleep(COOLDOWN + 0.2)
    # the next trial succeeds: closed, the model answers, no header
    assert_answered_by(predict(recovering, body), None, paths, project_schema, body)
    assert_answered_by(predict(recovering, body), None, paths, project_schema, body)
    time.sleep(telemetry.FLUSH_SECONDS + 0.5)  # the score counts reach /metrics within this
    samples = scrape(recovering)
    assert counted(samples, names.BREAKER_STATE) == fallback.STATE_VALUES[fallback.CLOSED]
    assert counted(samples, names.PRIMARY_FAILURES, reason="error") == 3
    assert counted(samples, names.FALLBACKS, reason="error", used="baseline") == 3
    assert counted(samples, names.FALLBACKS, reason="circuit_open", used="baseline") == 1
    assert counted(samples, names.FALLBACKS, reason="error", used="prior") == 0
    transitions = {
        state: counted(samples, names.BREAKER_TRANSITIONS, state=state)
        for state in names.BREAKER_STATES
    }
    assert transitions == {"open": 2, "half_open": 2, "closed": 1}
    # a fallback's answers stay out of the model's own score counts (they would read as drift)
    scored = sum(
        value
        for name, series in samples.items()
        if name == names.SCORE + "_count"
        for value in series.values()
    )
    assert scored == 2 * ROWS


# --- the model and its baseline raise: the prior answers ----------------------------------------


def test_when_the_baseline_fails_too_the_prior_answers(
    faulty: Callable[..., Server], body: dict[str, Any], paths: Paths, project_schema: Schema
) -> None:
    priors_only = faulty("raise,baseline:raise")
    for _ in range(FAILURES + 1):
        assert_answered_by(predict(priors_only, body), "prior", paths, project_schema, body)
    samples = scrape(priors_only)
    assert counted(samples, names.FALLBACKS, reason="error", used="prior") == FAILURES
    assert counted(samples, names.FALLBACKS, reason="circuit_open", used="prior") == 1
    assert counted(samples, names.FALLBACKS, reason="error", used="baseline") == 0
    assert counted(samples, names.BREAKER_STATE) == fallback.STATE_VALUES[fallback.OPEN]


# --- the model misses its deadline: served late, then the breaker sends requests on ----------


def test_a_late_model_is_served_until_the_breaker_opens_then_the_baseline_answers(
    faulty: Callable[..., Server], body: dict[str, Any], paths: Paths, project_schema: Schema
) -> None:
    slow = faulty("slow:300", MODEL_DEADLINE_MS="100")
    for _ in range(FAILURES):
        started = time.monotonic()
        assert_answered_by(predict(slow, body), None, paths, project_schema, body)
        assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert_answered_by(predict(slow, body), "baseline", paths, project_schema, body)
    assert time.monotonic() - started < 0.3  # the slow model was not called
    samples = scrape(slow)
    assert counted(samples, names.PRIMARY_FAILURES, reason="deadline") == FAILURES
    assert counted(samples, names.PRIMARY_FAILURES, reason="error") == 0
    assert counted(samples, names.FALLBACKS, reason="circuit_open", used="baseline") == 1
    assert counted(samples, names.BREAKER_STATE) == fallback.STATE_VALUES[fallback.OPEN]


# --- a model that cannot be loaded: live, never ready, no fallback answers -----------------


def test_a_model_that_cannot_load_keeps_the_service_unready_and_serves_nothing(
    faulty: Callable[..., Server],
    cut_short: Callable[..., tuple[Path, Path]],
    body: dict[str, Any],
    tag: str,
) -> None:
    def model_file(stored: Path) -> list[str]:
        return [json.loads((stored / "meta.json").read_text())["file"]]

    home, _ = cut_short("", model_file)
    broken = faulty("", home, ready="/livez")
    time.sleep(3)  # /livez answers before the worker has tried to load the model
    assert httpx.get(f"{broken.url}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{broken.url}/readyz", timeout=10).status_code == 503
    response = httpx.post(f"{broken.url}/predict", json=body, timeout=30)
    assert response.status_code == 503
    assert fallback.HEADER not in response.headers
    assert f"model {tag} cannot be loaded" in broken.log.read_text()


# --- every link fails: a 503 that says what failed, with Retry-After from the breaker ----------


def test_when_every_link_fails_the_client_gets_a_503_saying_what_failed_and_when_to_retry(
    faulty: Callable[..., Server], body: dict[str, Any]
) -> None:
    nothing_left = faulty("raise,baseline:raise,prior:raise")

    def unavailable() -> httpx.Response:
        response = httpx.post(f"{nothing_left.url}/predict", json=body, timeout=30)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json"
        assert fallback.HEADER not in response.headers
        assert int(response.headers["retry-after"]) == response.json()["retry_after"]
        return response

    raised = "raised InjectedFaultError"
    first = unavailable().json()  # the breaker is still closed: the model may be tried at once
    assert first["failed"] == {"primary": raised, "baseline": raised, "prior": raised}
    assert first["retry_after"] == 1
    assert "send it again in 1 s (Retry-After)" in first["error"]
    second = unavailable()  # the second failure in a row opens the breaker: its whole cool-down
    assert second.headers["retry-after"] == str(int(COOLDOWN))
    time.sleep(COOLDOWN / 2 + 0.2)
    third = unavailable().json()  # open: the model is not tried; the rest of the cool-down
    assert third["failed"]["primary"] == "not tried: its circuit breaker is open"
    assert third["retry_after"] == 1
    time.sleep(telemetry.FLUSH_SECONDS + 0.5)  # the request counts reach /metrics within this
    samples = scrape(nothing_left)
    requests = {
        (found["code"], found["outcome"]): value
        for labels, value in samples[names.REQUESTS].items()
        if (found := dict(labels))["endpoint"] == "/predict"
    }
    assert requests == {("503", "error"): 3}  # they spend the availability SLO's budget
    assert counted(samples, names.FALLBACK_UNAVAILABLE, link="baseline") == 0
    assert counted(samples, names.FALLBACK_UNAVAILABLE, link="prior") == 0


# --- a baseline that cannot be loaded: served without it, logged, counted ----------------------


def test_a_baseline_that_cannot_load_is_logged_counted_and_the_prior_answers_instead(
    faulty: Callable[..., Server],
    cut_short: Callable[..., tuple[Path, Path]],
    body: dict[str, Any],
    paths: Paths,
    project_schema: Schema,
) -> None:
    def read_files(stored: Path) -> list[str]:  # what the service reads, but its meta.json
        return [file for file in loaded_files(stored) if file != "meta.json"]

    home, baseline = cut_short(BASELINE, read_files)
    server = faulty("raise", home)  # the model raises: its failures show what answers instead
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert_answered_by(predict(server, body), "prior", paths, project_schema, body)
    samples = scrape(server)
    assert counted(samples, names.FALLBACK_UNAVAILABLE, link="baseline") == 1
    assert counted(samples, names.FALLBACK_UNAVAILABLE, link="prior") == 0
    assert counted(samples, names.FALLBACKS, reason="error", used="prior") == 1
    said = server.log.read_text()
    warning = next(line for line in said.splitlines() if "cannot be loaded" in line)
    assert str(baseline) in warning
