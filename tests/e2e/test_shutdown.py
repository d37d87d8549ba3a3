"""Graceful shutdown: SIGTERM (what Kubernetes sends) lets a request already in flight finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from pipelines.schema import Schema
from tests.support.serving import records, start
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow


def read_until_closed(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def one_row(test_rows: pd.DataFrame, project_schema: Schema) -> tuple[bytes, float]:
    """A /predict body of one test row, and the pipeline's probability for it."""
    body = json.dumps({"records": records(test_rows.head(1), project_schema)}).encode()
    return body, float(test_rows["probability"].iloc[0])


def test_sigterm_lets_an_in_flight_request_finish(
    project: ScratchRepo,
    bentoml_env: dict[str, str],
    tag: str,
    one_row: tuple[bytes, float],
    tmp_path: Path,
) -> None:
    server = start(project, bentoml_env, tag, tmp_path / "serve.log")
    port = int(server.url.rsplit(":", 1)[1])
    body, expected = one_row
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            # Headers and part of the body: the request is in flight, not finished, whatever
            # the timing, until the rest of the body arrives.
            connection.sendall(head + body[:10])
            time.sleep(0.5)
            os.killpg(server.process.pid, signal.SIGTERM)
            time.sleep(1.0)
            assert server.process.poll() is None, "the server quit with a request in flight"
            connection.sendall(body[10:])
            response = read_until_closed(connection)
        assert server.process.wait(30) == 0, server.log.read_text()[-3000:]
    finally:
        server.stop()
    status, _, payload = response.partition(b"\r\n\r\n")
    assert status.split(b"\r\n", 1)[0].split()[1] == b"200", response[:500]
    prediction = json.loads(payload)["predictions"][0]
    assert prediction["probability"] == pytest.approx(expected, abs=1e-6)
