"""The model's metrics and request log over real HTTP, from a service with two workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipelines.core.profile import Profile
from pipelines.monitoring import alertmanager, rules
from pipelines.params import (
    AlertingParams,
    EvaluateParams,
    MonitorParams,
    Paths,
    RegisterParams,
    load_section,
)
from pipelines.schema import Schema, load_schema
from pipelines.serving import names
from pipelines.serving import telemetry as metrics
from tests.support.serving import Server, free_port, records, start
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow

BATCH = 7  # records per small batch, counted record by record
LARGE = 40  # records of the one large batch, counted with numpy (metrics.VECTOR_BATCH)
ALLOWED_LABELS = {"model", "model_version", "feature", "bin", "kind", "endpoint", "code"}
ALLOWED_LABELS |= {"outcome", "le", "mlflow_version", "git_commit", "column", "group"}
ALLOWED_LABELS |= {"decision", "part", "key"}
ALLOWED_LABELS |= {"reason", "used", "state", "link"}  # the fallback chain's: fixed sets, names.py
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def monitored(
    project: ScratchRepo,
    bentoml_env: dict[str, str],
    tag: str,
    logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A service with two workers (their metrics must add up) logging every request."""
    name = tag.split(":", maxsplit=1)[0]
    env = bentoml_env | {
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {name: {"workers": 2}}}),
        "MODEL_REQUEST_LOG_RATE": "1",
        "MODEL_REQUEST_LOG_DIR": str(logs),
    }
    server = start(project, env, tag, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(monitored: Server, test_rows: pd.DataFrame, project_schema: Schema) -> dict[str, Any]:
    """Traffic: 20 single-record requests, batches of BATCH and one of LARGE, new connections."""
    rows = test_rows.head(20 + 5 * BATCH + LARGE)
    sent = records(rows, project_schema)
    bodies = [sent[i : i + 1] for i in range(20)]
    bodies += [sent[i : i + BATCH] for i in range(20, 20 + 5 * BATCH, BATCH)]
    bodies.append(sent[20 + 5 * BATCH :])
    assert len(bodies[-1]) == LARGE >= metrics.VECTOR_BATCH
    responses = []
    for body in bodies:
        # A new connection per request: the kernel spreads them over both workers.
        with httpx.Client(base_url=monitored.url, timeout=30) as client:
            responses.append(client.post("/predict", json={"records": body}))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    probabilities = [p["probability"] for r in responses for p in r.json()["predictions"]]
    return {"rows": rows, "bodies": bodies, "responses": responses, "scores": probabilities}


def scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics by name, keyed by its sorted labels, once counts are flushed."""
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: dict[tuple[tuple[str, str], ...], float], *names: str) -> dict[Any, float]:
    """Samples keyed by the values of the given labels (one name: the bare value)."""
    keyed = {}
    for labels, value in samples.items():
        found = dict(labels)
        key = tuple(found[name] for name in names)
        keyed[key[0] if len(names) == 1 else key] = value
    return keyed


def test_every_served_value_is_counted_in_its_reference_bin(
    served: dict[str, Any], monitored: Server, paths: Paths
) -> None:
    profile = Profile.read(paths.reference)
    counted = by(scrape(monitored)[names.FEATURE_BIN], "feature", "bin")
    rows = served["rows"]
    for name, reference in profile.features.items():
        expected = reference.binning.counts(rows[name])
        got = [counted[(name, label)] for label in reference.binning.labels]
        assert got == expected.tolist(), name
    assert sum(counted.values()) == len(rows) * len(profile.features)


def test_every_score_is_counted_in_its_bin_and_the_histogram(
    served: dict[str, Any], monitored: Server, paths: Paths
) -> None:
    profile = Profile.read(paths.reference)
    samples = scrape(monitored)
    scores = np.asarray(served["scores"])
    bins = by(samples[names.SCORE_BIN], "bin")
    expected = profile.score.binning.counts(scores)
    assert [bins[label] for label in profile.score.binning.labels] == expected.tolist()
    buckets = by(samples[names.SCORE + "_bucket"], "le")
    for bound in names.SCORE_BUCKETS:
        assert buckets[str(bound)] == np.count_nonzero(scores <= bound), bound
    assert buckets["+Inf"] == len(scores)
    (total,) = samples[names.SCORE + "_sum"].values()
    assert total == pytest.approx(scores.sum())


def test_the_reference_profile_is_exported_as_it_was_written(
    served: dict[str, Any], monitored: Server, paths: Paths
) -> None:
    profile = Profile.read(paths.reference)
    samples = scrape(monitored)
    fractions = by(samples[names.REFERENCE_FEATURE_FRACTION], "feature", "bin", "kind")
    expected = {
        (name, label, reference.binning.kind): fraction
        for name, reference in profile.features.items()
        for label, fraction in zip(reference.binning.labels, reference.fractions, strict=True)
    }
    assert fractions == pytest.approx(expected)
    rows = by(samples[names.REFERENCE_FEATURE_ROWS], "feature")
    assert rows == {name: reference.rows for name, reference in profile.features.items()}
    score = by(samples[names.REFERENCE_SCORE_FRACTION], "bin")
    assert score == pytest.approx(
        dict(zip(profile.score.binning.labels, profile.score.fractions, strict=True))
    )


def test_refusals_are_counted_by_outcome_and_every_request_is_timed(
    served: dict[str, Any], monitored: Server
) -> None:
    good = served["bodies"][0]
    with httpx.Client(base_url=monitored.url, timeout=30) as client:
        assert client.post("/predict", json={"records": [{}]}).status_code == 400
        refused = client.post("/predict", content=b"a,b", headers={"content-type": "text/csv"})
        assert refused.status_code == 415
        oversized = client.post("/predict", content=b" " * (2 << 20), headers=JSON)
        assert oversized.status_code == 413
        assert client.post("/explain", json={"records": good}).status_code == 200
    requests = by(scrape(monitored)[names.REQUESTS], "endpoint", "code", "outcome")
    assert requests == {
        ("/predict", "200", "ok"): len(served["bodies"]),
        ("/predict", "400", "invalid"): 1,
        ("/predict", "415", "unsupported_type"): 1,
        ("/predict", "413", "too_large"): 1,
        ("/explain", "200", "ok"): 1,
    }
    timed = by(scrape(monitored)[names.REQUEST_DURATION + "_count"], "endpoint")
    assert timed == {"/predict": len(served["bodies"]) + 3, "/explain": 1}


def test_every_model_series_names_the_model_and_version_and_nothing_per_request(
    served: dict[str, Any], monitored: Server, tag: str, paths: Paths
) -> None:
    name, version = tag.split(":")
    samples = scrape(monitored)
    ours = {key: value for key, value in samples.items() if key.startswith("model_")}
    # exactly the families the rules and the dashboard are written against (names.py); the
    # predicted class's are a multiclass model's alone, the decisions' a classifier's, their
    # expected value a model's with a value model
    task = load_schema(paths.schema_).target.task
    meta = json.loads((paths.model / "meta.json").read_text())
    absent = set() if task == "multiclass" else set(names.CLASS_FAMILIES)
    absent |= set(names.DECISION_FAMILIES) if task == "regression" else set()
    absent |= set() if "value" in meta else {names.EXPECTED_VALUE}
    assert {family(sample) for sample in ours} == set(names.FAMILIES) - absent
    for series in ours.values():
        for labels in series:
            found = dict(labels)
            assert found["model"] == name
            assert found["model_version"] == version
            assert set(found) <= ALLOWED_LABELS, found
    (info,) = samples[names.INFO]
    assert dict(info)["git_commit"]


def test_decisions_and_their_expected_value_add_up_to_the_responses_sent(
    served: dict[str, Any], monitored: Server, paths: Paths, project_schema: Schema
) -> None:
    """Every row's decision is counted once in total and once in its group of each sensitive
    column; the expected value is what the responses' probabilities give, row by row."""
    if project_schema.target.task != "binary":
        pytest.skip("the responses' probabilities here are a binary model's")
    samples = scrape(monitored)
    counted = by(samples[names.DECISIONS], "column", "group", "decision")
    labels = [str(p["label"]) for r in served["responses"] for p in r.json()["predictions"]]
    total = {d: n for (c, g, d), n in counted.items() if c == "" and n}
    assert total == {d: labels.count(d) for d in set(labels)}
    rows = served["rows"].reset_index(drop=True)
    audit = json.loads(paths.fairness.read_text())
    for column, found in audit.items():
        groups = rows[column].map(lambda v: "<missing>" if pd.isna(v) else str(v))
        groups = groups.where(groups.isin(list(found["groups"])), names.OTHER_GROUP)
        expected = pd.Series(labels).groupby(groups.to_numpy()).value_counts().to_dict()
        got = {(g, d): n for (c, g, d), n in counted.items() if c == column and n}
        assert got == {key: float(n) for key, n in expected.items()}, column
    meta = json.loads((paths.model / "meta.json").read_text())
    if "value" not in meta:
        return
    gain = np.asarray(meta["value"]["gain"])  # actual x decided
    p = np.asarray(served["scores"])
    acted = np.asarray([label == str(project_schema.target.positive) for label in labels], int)
    per_row = p * gain[1, acted] + (1 - p) * gain[0, acted]
    amount = meta["value"]["amount"]
    if amount:
        per_row = per_row * rows[amount].to_numpy(dtype=float)
    parts = by(samples[names.EXPECTED_VALUE], "column", "group", "part")
    assert parts[("", "", "gain")] - parts[("", "", "loss")] == pytest.approx(per_row.sum())


def test_each_response_carries_a_request_id(monitored: Server) -> None:
    ids = [response.headers["x-request-id"] for response in served_once(monitored, 3)]
    assert len(set(ids)) == 3
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    with httpx.Client(base_url=monitored.url, timeout=30) as client:
        mine = client.post("/predict", json={"records": [{}]}, headers={"x-request-id": "order-7"})
        unsafe = client.post("/predict", json={"records": [{}]}, headers={"x-request-id": "a b"})
    assert mine.headers["x-request-id"] == "order-7"  # a client's own id, even on a 400
    assert unsafe.headers["x-request-id"] != "a b"


def family(sample: str) -> str:
    """The metric family of a sample name (a histogram's _bucket, _count and _sum are its)."""
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.removesuffix(suffix) in names.HISTOGRAMS:
            return sample.removesuffix(suffix)
    return sample


def served_once(server: Server, n: int) -> list[httpx.Response]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return [client.post("/predict", json={"records": [{}]}) for _ in range(n)]


def test_the_request_log_holds_each_record_with_its_id_and_prediction(
    served: dict[str, Any], logs: Path, tag: str
) -> None:
    lines = [json.loads(line) for path in sorted(logs.glob("*.jsonl")) for line in path.open()]
    by_id = {line["id"]: line for line in lines}
    assert len(by_id) == len(lines) == len(served["rows"])  # only served /predict records
    for body, response in zip(served["bodies"], served["responses"], strict=True):
        request_id = response.headers["x-request-id"]
        predictions = response.json()["predictions"]
        ids = [request_id] if len(body) == 1 else [f"{request_id}/{i}" for i in range(len(body))]
        for record_id, record, prediction in zip(ids, body, predictions, strict=True):
            line = by_id[record_id]
            assert line["record"] == record
            assert line["probability"] == prediction["probability"]
            assert line["label"] == prediction["label"]
            assert line["model_version"] == tag.split(":")[1]
    assert {path.name.count("-") for path in logs.glob("*.jsonl")} == {2}  # per worker and hour


# --- end to end: the generated rules in a real Prometheus scraping the service ------------------
# Runs last in this module: the exact counts above need the service's traffic to be theirs.

WINDOW_S = 30
E2E = {"window": f"{WINDOW_S}s", "alert_after": "5s", "false_alarm_rate": 0.01}
MIN_ROWS = 150  # a verdict's least rows in the window, unless the test split is smaller
DEADLINE_S = 150  # the whole end-to-end test, from the first request


def window_min_rows(test_rows: pd.DataFrame) -> int:
    """Rows a window needs for a verdict: the test split is sent once a window, so at most half
    of it (a small table's test split holds about 100 rows)."""
    return min(MIN_ROWS, len(test_rows) // 2)


TOKEN = "e2e-webhook-token"  # noqa: S105 - the test's own receiver's bearer token
E2E_ROUTING = {"group_wait": "1s", "group_interval": "1s"}  # deliver at once, not after 30 s


@dataclass
class Webhook:
    """A webhook receiver on 127.0.0.1: every notification Alertmanager posts, as received."""

    url: str
    received: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def alerts(self, name: str) -> dict[str, tuple[float, dict[str, Any]]]:
        """The first firing notification of each instance of alert ``name``, by feature, with
        the time it arrived."""
        found: dict[str, tuple[float, dict[str, Any]]] = {}
        for at, _, payload in list(self.received):
            for alert in payload.get("alerts", []):
                if alert["labels"].get("alertname") == name and alert["status"] == "firing":
                    found.setdefault(alert["labels"].get("feature", ""), (at, alert))
        return found


def binary(*candidates: str) -> str:
    """The first installed of ``candidates``; fails in CI, skips elsewhere."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    message = f"{candidates[0]} is not installed: apt-get install it (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not ready(url):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} not ready in 30 s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    """The receiver the generated Alertmanager configuration posts to (http.server, a thread)."""
    hook = Webhook(url="")

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            hook.received.append(
                (time.monotonic(), self.headers.get("authorization", ""), json.loads(body))
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def alerting(
    project: ScratchRepo, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Webhook]]:
    """A real Alertmanager on 127.0.0.1 (no cluster port) with the generated configuration,
    pointed at the test's webhook, its bearer token read from a file as in production."""
    program = binary("prometheus-alertmanager", "alertmanager")
    home = tmp_path_factory.mktemp("alertmanager")
    (home / "token").write_text(TOKEN)
    params = load_section("alerting", AlertingParams, project.path / "params.yaml")
    params = params.model_copy(
        update=E2E_ROUTING | {"webhook_url": webhook.url, "webhook_token_file": str(home / "token")}
    )
    model = load_section("register", RegisterParams, project.path / "params.yaml").model_name
    (home / "alertmanager.yml").write_text(alertmanager.render(params, model))
    port = free_port()
    with (home / "alertmanager.log").open("wb") as log:
        process = subprocess.Popen(
            [
                program,
                f"--config.file={home / 'alertmanager.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(
            f"http://127.0.0.1:{port}/-/ready", process, home / "alertmanager.log", "Alertmanager"
        )
        yield f"127.0.0.1:{port}", webhook
    finally:
        process.terminate()
        process.wait(20)


@dataclass
class Prometheus:
    """A Prometheus on 127.0.0.1 scraping the service every second, with the generated rules."""

    url: str
    process: subprocess.Popen[bytes]
    webhook: Webhook  # where its Alertmanager posts the alerts

    def query(self, expression: str) -> dict[str, float]:
        """An instant query's vector, keyed by each sample's ``feature`` label (or "")."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        answer.raise_for_status()
        return {
            sample["metric"].get("feature", ""): float(sample["value"][1])
            for sample in answer.json()["data"]["result"]
        }

    def alerts(self, name: str) -> dict[str, str]:
        """The state (pending or firing) of each of alert ``name``'s instances, by feature."""
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return {
            a["labels"].get("feature", ""): a["state"]
            for a in answer
            if a["labels"]["alertname"] == name
        }


@pytest.fixture(scope="module")
def prometheus(
    monitored: Server,
    project: ScratchRepo,
    test_rows: pd.DataFrame,
    alerting: tuple[str, Webhook],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    """A Prometheus scraping the service with the generated rules, alerting its Alertmanager."""
    alertmanager_url, webhook = alerting
    program = binary("prometheus")
    home = tmp_path_factory.mktemp("prometheus")
    params = load_section("monitor", MonitorParams, project.path / "params.yaml")
    params = params.model_copy(update=E2E | {"min_rows": window_min_rows(test_rows)})
    model = load_section("register", RegisterParams, project.path / "params.yaml").model_name
    schema = load_schema(project.path / "schema.yaml")
    (home / "rules.yml").write_text(
        yaml.safe_dump(rules.rule_groups(params, model, len(schema.features)))
    )
    target = monitored.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(home / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url]}]}]},
        "scrape_configs": [{"job_name": "model", "static_configs": [{"targets": [target]}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (home / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                program,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, webhook)
    try:
        wait_ready(server.url + "/-/ready", process, home / "prometheus.log", "Prometheus")
        yield server
    finally:
        process.terminate()
        process.wait(20)


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def shifted(rows: pd.DataFrame, schema: Schema, features: list[str]) -> pd.DataFrame:
    """The rows with each numeric feature of ``features`` halved towards its lower bound and
    each category feature all one value (its commonest)."""
    out = rows.copy()
    for name in features:
        feature = schema.features[name]
        if feature.type == "category":
            out[name] = out[name].mode().iloc[0]
            continue
        low = feature.min or 0.0
        halved = low + (out[name] - low) / 2
        if feature.type == "integer":  # a JSON integer, missing stays missing
            halved = halved.round().astype(object).where(halved.isna(), halved.round().map(int))
        out[name] = halved
    return out


def test_shifted_traffic_fires_the_drift_alert_of_exactly_the_shifted_features(
    prometheus: Prometheus,
    monitored: Server,
    test_rows: pd.DataFrame,
    project_schema: Schema,
    project: ScratchRepo,
) -> None:
    """Test-split traffic raises no alert; then two features shift (the numeric feature with
    the most values, integers first, halved; and the first evaluation segment set to its
    commonest value, or where the table has no category column the next numeric feature) and
    their alert fires, naming each, while every other feature's PSI stays under its threshold.
    A real Alertmanager with the generated configuration then posts each to the webhook, with
    the feature, its PSI, the threshold and the window's rows, and the bearer token of its file."""
    schema = project_schema
    params = load_section("evaluate", EvaluateParams, project.path / "params.yaml")
    numerics = sorted(
        (n for n, f in schema.features.items() if f.type != "category"),
        key=lambda n: (schema.features[n].type == "integer", test_rows[n].nunique()),
        reverse=True,
    )
    segment = [c for c in params.segments if schema.features[c].type == "category"]
    moved = [numerics[0], *(segment or numerics[1:])[:1]]
    assert len(moved) == 2, "two features to shift: the table has one feature"
    window = E2E["window"]
    min_rows = window_min_rows(test_rows)
    psi, threshold = f"model:feature_psi:{window}", f"model:feature_psi_threshold:{window}"
    normal = records(test_rows, schema)
    drifted = records(shifted(test_rows, schema, moved), schema)
    started = time.monotonic()
    client = httpx.Client(base_url=monitored.url, timeout=30)

    # A window holds each test row about once: rows sent again count as new rows to the
    # threshold, which would then judge the test split's own sampling noise against training.
    pace = BATCH / (len(normal) / WINDOW_S)  # seconds between batches
    assert len(normal) >= 2 * min_rows
    sent = 0

    def send(rows: list[dict[str, Any]], seconds: float) -> None:
        """Batches of BATCH rows at the pace above, for ``seconds``.

        Each batch has its time slot, so a slow answer (a loaded machine) does not thin out
        the window.
        """
        nonlocal sent
        slot = time.monotonic()
        end = slot + seconds
        while time.monotonic() < end:
            batch = [rows[(sent + k) % len(rows)] for k in range(BATCH)]
            assert client.post("/predict", json={"records": batch}).status_code == 200
            sent += BATCH
            slot += pace
            time.sleep(max(0.0, slot - time.monotonic()))
        assert time.monotonic() - started < DEADLINE_S

    # Without drift: the window fills, every feature is judged, none drifts, nothing fires.
    # The last rows reach the rules a scrape and an evaluation later: up to 5 s more.
    send(normal, WINDOW_S)
    served = f"{psi} and model:feature_rows_served:increase{window} >= {min_rows}"
    judged = prometheus.query(served)
    for _ in range(5):
        if set(judged) == set(schema.features):
            break
        send(normal, 1)
        judged = prometheus.query(served)
    assert set(judged) == set(schema.features), judged
    over = prometheus.query(f"{psi} > {threshold}")
    assert over == {}, over
    send(normal, 8)  # longer than alert_after
    assert prometheus.alerts("ModelFeatureDrift") == {}

    # Shifted traffic until both alerts fire (bounded).
    shift_started = time.monotonic()
    fired: dict[str, float] = {}
    while len(fired) < 2:
        send(drifted, 1)
        for feature, state in prometheus.alerts("ModelFeatureDrift").items():
            if state == "firing":
                fired.setdefault(feature, time.monotonic() - shift_started)
    assert set(fired) == set(moved), fired
    values, limits = prometheus.query(psi), prometheus.query(threshold)
    calm = {f: values[f] for f in schema.features if f not in fired}
    assert all(values[f] <= limits[f] for f in calm), {f: (values[f], limits[f]) for f in calm}
    client.close()
    webhook = prometheus.webhook

    # Alertmanager delivers them: one notification per group (model and alert name), each alert
    # carrying its numbers; nothing about a calm feature.
    deadline = time.monotonic() + 20
    while set(webhook.alerts("ModelFeatureDrift")) != set(moved):
        assert time.monotonic() < deadline, webhook.received
        time.sleep(0.2)
    delivered = webhook.alerts("ModelFeatureDrift")
    assert {auth for _, auth, _ in webhook.received} == {f"Bearer {TOKEN}"}
    for feature, (_, alert) in delivered.items():
        numbers = {k: float(alert["annotations"][k]) for k in ("psi", "threshold", "rows")}
        assert numbers["psi"] > numbers["threshold"] > 0, (feature, numbers)
        assert numbers["rows"] >= min_rows, (feature, numbers)
        assert feature in alert["annotations"]["summary"]
        assert alert["labels"]["severity"] == "ticket"
    received = {f: round(at - shift_started, 1) for f, (at, _) in delivered.items()}
    print(
        f"\ndrift alerts firing after {fired} s of shifted traffic, delivered to the webhook "
        f"after {received} s (window {window}, alert_after {E2E['alert_after']}, group_wait "
        f"{E2E_ROUTING['group_wait']}); PSI {values}"
    )
