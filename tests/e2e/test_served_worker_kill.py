"""A worker killed under load: the arbiter starts another, and retrying clients lose nothing.

A real `bentoml serve` of the session's trained model with two workers. Threads of
:class:`pipelines.serving.client.PredictClient` (the client docs/serving.md shows) send
one-record requests while the worker holding the most of their connections is SIGKILLed
(:func:`benchmarks.workers.kill_and_watch`, as ``make bench`` kills one).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from benchmarks import workers
from pipelines.core.features import encode
from pipelines.core.model import load_model
from pipelines.params import Paths
from pipelines.schema import Schema
from pipelines.serving.client import PredictClient
from tests.support.serving import (
    Server,
    assert_predictions_match,
    expected_predictions,
    records,
    start,
)
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow  # a server of its own, on the session's trained model

WORKERS = 2
THREADS = 6
ROWS = 30
RETRIES = 2
READY_S = 60.0  # the arbiter looks every 10 s, then the new worker loads the model


@pytest.fixture
def two_workers(
    project: ScratchRepo, bentoml_env: dict[str, str], tag: str, tmp_path: Path
) -> Iterator[Server]:
    name = tag.split(":", maxsplit=1)[0]
    overrides = {"services": {name: {"workers": WORKERS}}}
    env = bentoml_env | {"BENTOML_CONFIG_OVERRIDES": json.dumps(overrides)}
    server = start(project, env, tag, tmp_path / "serve.log")
    yield server
    server.stop()


@pytest.fixture
def bodies(
    paths: Paths, project_schema: Schema, test_rows: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One-record requests of test rows, and the model's own prediction for each."""
    rows = test_rows.head(ROWS)
    model = load_model(paths.model)
    expected = expected_predictions(
        model.predict(encode(rows, project_schema)),
        project_schema,
        threshold=model.threshold,
        half_width=model.half_width(),
    )
    return records(rows, project_schema), expected


def test_a_killed_worker_is_replaced_and_retrying_clients_get_every_answer(
    two_workers: Server, bodies: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    server = two_workers
    sent, expected = bodies
    answers: list[tuple[int, dict[str, Any]]] = []
    failures: list[str] = []
    retried: list[int] = []
    stop = threading.Event()

    def send(offset: int) -> None:
        with PredictClient(server.url, retries=RETRIES) as client:
            i = offset
            while not stop.is_set():
                try:
                    answers.append((i, client.predict([sent[i]])["predictions"][0]))
                except Exception as error:  # any failure is the test's finding
                    failures.append(repr(error))
                i = (i + 1) % ROWS
            retried.append(client.retried)

    threads = [threading.Thread(target=send, args=(n * 5,)) for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # every thread has its kept-alive connection to a worker
        port = int(server.url.rpartition(":")[2])
        watched = workers.kill_and_watch(server.process.pid, port, server.log, READY_S)
        time.sleep(0.5)  # requests after the new worker has loaded the model, too
        stop.set()
        for thread in threads:
            thread.join(30)
        readyz = httpx.get(f"{server.url}/readyz", timeout=10).status_code
    finally:
        stop.set()

    assert failures == []
    assert watched["workers_before"] == WORKERS
    # The kill cut connections in use: their clients sent again, and got their answers
    assert watched["killed_held_connections"] >= 1
    assert sum(retried) >= watched["killed_held_connections"]
    assert watched["respawned_s"] is not None, server.log.read_text()[-3000:]
    assert watched["ready_s"] is not None, server.log.read_text()[-3000:]
    assert watched["workers_after"] == WORKERS
    assert readyz == 200
    assert len(answers) > 10 * THREADS
    assert_predictions_match(
        [answer for _, answer in answers], [expected[i] for i, _ in answers], 1e-5, 1e-6
    )
