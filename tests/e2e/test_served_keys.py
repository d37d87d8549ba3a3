"""API keys on a real `bentoml serve` (the session's server, which runs with a key file).

The 401/200 matrix of the protected routes, the open probes, the counts per key name, the file
read again after a change, and no key or digest in the server's log or metrics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.serving import keys, names
from tests.support.serving import (
    API_KEY,
    API_KEY_NAME,
    ROTATED_KEY,
    ROTATED_KEY_NAME,
    Server,
    records,
)

pytestmark = pytest.mark.slow  # the session runs the real pipeline once

LATER_KEY = keys.new_key()
LATER_NAME = "tests-later"
KEYS = {
    "none": None,
    "unknown": keys.new_key(),
    "malformed": "not a key",
    API_KEY_NAME: API_KEY,
    ROTATED_KEY_NAME: ROTATED_KEY,
}


def send(server: Server, route: str, key: str | None, body: Any) -> httpx.Response:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        if route == "/card":
            return client.get(route)
        return client.post(route, json=body)


def requests_by_key(server: Server) -> dict[tuple[str, str, str], float]:
    """model_requests_total by (endpoint, outcome, key), once the counts are flushed."""
    time.sleep(1.5)
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    counted: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == names.REQUESTS:
                found = sample.labels
                at = (found["endpoint"], found["outcome"], found["key"])
                counted[at] = counted.get(at, 0.0) + sample.value
    return counted


@pytest.fixture(scope="module")
def body(test_rows: Any, project_schema: Any) -> dict[str, Any]:
    return {"records": records(test_rows.head(2), project_schema)}


@pytest.fixture(scope="module")
def matrix(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """The status of each protected route for each kind of key, and the counts it added."""
    before = requests_by_key(server)
    statuses = {}
    for route in keys.PROTECTED:
        for kind, key in KEYS.items():
            answer = send(server, route, key, body)
            statuses[route, kind] = answer.status_code
            if answer.status_code == 401:
                challenge = answer.headers["www-authenticate"]
                assert challenge.startswith("Bearer"), challenge
                assert "Authorization: Bearer <key>" in answer.json()["error"]
    after = requests_by_key(server)
    counted = {at: after[at] - before.get(at, 0.0) for at in after}
    return {"statuses": statuses, "counted": {at: n for at, n in counted.items() if n}}


def test_the_protected_routes_answer_only_a_valid_key_of_either_in_a_rotation(
    matrix: dict[str, Any],
) -> None:
    for route in keys.PROTECTED:
        got = {kind: matrix["statuses"][route, kind] for kind in KEYS}
        assert got == {
            "none": 401,
            "unknown": 401,
            "malformed": 401,
            API_KEY_NAME: 200,
            ROTATED_KEY_NAME: 200,
        }, route


@pytest.mark.parametrize("route", ["/livez", "/readyz", "/metrics", "/docs.json"])
def test_probes_metrics_and_the_api_document_stay_open(server: Server, route: str) -> None:
    assert httpx.get(f"{server.url}{route}", timeout=10).status_code == 200


def test_requests_are_counted_per_key_name_never_per_key(matrix: dict[str, Any]) -> None:
    counted = matrix["counted"]
    for endpoint in ("/predict", "/explain"):  # /card is a document, not counted
        assert counted[endpoint, "unauthorized", "none"] == 1
        assert counted[endpoint, "unauthorized", "unknown"] == 2  # unknown and malformed
        assert counted[endpoint, "ok", ROTATED_KEY_NAME] == 1
        assert counted[endpoint, "ok", API_KEY_NAME] >= 1  # other tests may send it meanwhile
    assert {key for _, _, key in counted} <= {"none", "unknown", API_KEY_NAME, ROTATED_KEY_NAME}


def test_the_key_file_is_read_again_when_it_changes(
    server: Server, key_file: Path, body: dict[str, Any]
) -> None:
    """The rotation ends (the rotated key's line goes) and a new key comes, without a restart."""
    kept = key_file.read_text()
    assert send(server, "/predict", LATER_KEY, body).status_code == 401
    changed = key_file.with_name("api-keys.new")
    lines = [f"{keys.digest(API_KEY)} {API_KEY_NAME}", f"{keys.digest(LATER_KEY)} {LATER_NAME}"]
    changed.write_text("\n".join(lines) + "\n")
    changed.replace(key_file)
    try:
        time.sleep(keys.CHECK_SECONDS + 0.5)  # every worker looks at the file on its next request
        for _ in range(4):  # new connections: the kernel spreads them over the workers
            assert send(server, "/predict", LATER_KEY, body).status_code == 200
            assert send(server, "/predict", ROTATED_KEY, body).status_code == 401
            assert send(server, "/predict", API_KEY, body).status_code == 200
    finally:
        key_file.write_text(kept)
        time.sleep(keys.CHECK_SECONDS + 0.5)
    assert send(server, "/predict", ROTATED_KEY, body).status_code == 200


def test_no_key_or_digest_reaches_the_log_or_the_metrics(
    server: Server, matrix: dict[str, Any]
) -> None:
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    text = server.log.read_text(errors="replace") + metrics
    for key in [*(k for k in KEYS.values() if k), LATER_KEY]:
        assert key not in text
        assert keys.digest(key) not in text
