"""The retrying client against a real HTTP server that cuts connections as a dying worker does."""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.serving.client import PredictClient, ServiceError

ANSWER = {"predictions": [{"value": 1}], "model": {"name": "m"}}


@dataclass
class Script:
    """What the server does with each request it reads, in turn; then it answers 200."""

    steps: list[str] = field(default_factory=list)  # "reset", "empty", "cut", "400", "503"
    seen: list[dict[str, Any]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)


def handler_for(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service's uvicorn

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.seen.append(
                {"path": self.path, "body": body, "auth": self.headers["Authorization"]}
            )
            script.connections.add(self.client_address[1])
            step = script.steps.pop(0) if script.steps else "ok"
            if step == "reset":  # RST: linger on with a time of 0, closed at once (no FIN)
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                os.close(self.connection.detach())
                self.close_connection = True
                return
            if step == "empty":  # closed without a byte of answer
                self.close_connection = True
                return
            payload = json.dumps(ANSWER).encode()
            status = {"ok": 200, "cut": 200, "400": 400, "503": 503}[step]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 503:
                self.send_header("Retry-After", "3")
            self.end_headers()
            if step == "cut":  # the headers, half the body, then gone
                self.wfile.write(payload[: len(payload) // 2])
                self.close_connection = True
                return
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(script))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("failure", ["reset", "empty", "cut"])
def test_a_cut_connection_is_retried_on_a_new_one(server: tuple[str, Script], failure: str) -> None:
    url, script = server
    script.steps = [failure, failure]
    with PredictClient(url, retries=2) as client:
        assert client.predict([{"a": 1}]) == ANSWER
        assert client.retried == 2
    assert [s["body"] for s in script.seen] == [{"records": [{"a": 1}]}] * 3
    assert len(script.connections) == 3  # a new connection for each try


def test_without_retries_the_failure_reaches_the_caller(server: tuple[str, Script]) -> None:
    url, script = server
    script.steps = ["empty", "reset", "empty"]
    with PredictClient(url, retries=0) as client, pytest.raises(http.client.RemoteDisconnected):
        client.predict([{"a": 1}])
    with PredictClient(url, retries=1) as client, pytest.raises(ConnectionError):
        client.predict([{"a": 1}])  # reset, then empty: still failing after one retry
    assert len(script.seen) == 3


def test_a_kept_alive_connection_serves_request_after_request(server: tuple[str, Script]) -> None:
    url, script = server
    with PredictClient(url + "/", api_key="k") as client:
        for _ in range(3):
            assert client.predict([{"a": 1}]) == ANSWER
    assert len(script.connections) == 1
    assert {s["path"] for s in script.seen} == {"/predict"}
    assert {s["auth"] for s in script.seen} == {"Bearer k"}


def test_an_http_error_is_not_retried_and_says_when_to_come_back(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.steps = ["400", "503"]
    with PredictClient(url, retries=2) as client:
        with pytest.raises(ServiceError) as refused:
            client.predict([{"a": "bad"}])
        assert refused.value.status == 400
        assert refused.value.retry_after is None
        with pytest.raises(ServiceError) as unavailable:
            client.predict([{"a": 1}])
        assert (unavailable.value.status, unavailable.value.retry_after) == (503, 3.0)
        assert json.loads(unavailable.value.body) == ANSWER
        assert client.retried == 0
        assert client.predict([{"a": 1}]) == ANSWER  # the same connection goes on
    assert len(script.seen) == 3


def test_a_timeout_is_not_retried() -> None:
    with socket.socket() as silent:  # accepts (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with PredictClient(url, retries=2, timeout=0.2) as client, pytest.raises(TimeoutError):
            client.predict([{"a": 1}])
        assert client.retried == 0


def test_only_http_urls_are_taken() -> None:
    for url in ("ftp://host/", "127.0.0.1:3000", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            PredictClient(url)
