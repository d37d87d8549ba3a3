"""Shadow scoring in a real `bentoml serve`: the model's answers unchanged, both logged, reported.

The session's trained model serves with its own baseline as the challenger (imported into the
session's BentoML store as another model), on every request (``MODEL_SHADOW_RATE=1``), one
worker. Every test row is sent as its own request, its id as the request id; the test rows'
labels are the late labels of the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.core.lineage import tracking_uri
from pipelines.core.model import BASELINE
from pipelines.params import Paths
from pipelines.schema import Schema
from pipelines.serving import names, shadow
from tests.support.serving import Server, import_model, records, start
from tools.scratch import BIN, ScratchRepo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shadow_env(
    project: ScratchRepo, bentoml_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A BentoML store of this module's own (the session's holds exactly the model)."""
    env = bentoml_env | {"BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml-shadow"))}
    import_model(project, env)
    return env


@pytest.fixture(scope="module")
def challenger(project: ScratchRepo, shadow_env: dict[str, str], paths: Paths) -> str:
    return import_model(project, shadow_env, "--model", str(paths.model / BASELINE))


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shadow")


@pytest.fixture(scope="module")
def shadowed(
    project: ScratchRepo,
    *,
    shadow_env: dict[str, str],
    tag: str,
    challenger: str,
    shadow_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    name = tag.split(":", maxsplit=1)[0]
    env = shadow_env | {
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {name: {"workers": 1}}}),
        shadow.VARIABLE: challenger,
        shadow.RATE_VARIABLE: "1",
        shadow.LOG_DIR_VARIABLE: str(shadow_dir),
    }
    server = start(project, env, tag, tmp_path_factory.mktemp("logs") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def answers(
    shadowed: Server, test_rows: pd.DataFrame, project_schema: Schema
) -> dict[str, httpx.Response]:
    """Each test row's answer from the shadowed server, by request id (the row's id)."""
    bodies = records(test_rows, project_schema)
    ids = test_rows[project_schema.id].astype(str)
    with httpx.Client(base_url=shadowed.url, timeout=30) as client:
        return {
            request_id: client.post(
                "/predict", json={"records": [body]}, headers={"x-request-id": request_id}
            )
            for request_id, body in zip(ids, bodies, strict=True)
        }


def test_the_answers_are_the_models_byte_for_byte(
    answers: dict[str, httpx.Response],
    client: httpx.Client,
    test_rows: pd.DataFrame,
    project_schema: Schema,
) -> None:
    # The session's server (API keys on, no shadow) answers the same requests
    bodies = records(test_rows.head(50), project_schema)
    for request_id, body in zip(test_rows[project_schema.id].astype(str), bodies, strict=False):
        plain = client.post("/predict", json={"records": [body]})
        got = answers[request_id]
        assert got.status_code == plain.status_code == 200
        assert got.content == plain.content
        assert got.headers["x-request-id"] == request_id


def test_every_request_is_logged_by_both_models_and_counted(
    answers: dict[str, httpx.Response], shadowed: Server, shadow_dir: Path, challenger: str
) -> None:
    logged = {}
    for side in (shadow.CHAMPION, shadow.CHALLENGER):
        lines = [json.loads(line) for f in (shadow_dir / side).glob("*.jsonl") for line in f.open()]
        logged[side] = lines
        assert sorted(line["id"] for line in lines) == sorted(answers)
    # The model's side is what the clients got
    served = {line["id"]: line for line in logged[shadow.CHAMPION]}
    for request_id, response in answers.items():
        (prediction,) = response.json()["predictions"]
        line = served[request_id]
        assert {key: line[key] for key in prediction} == prediction
    versions = {line["model_version"] for line in logged[shadow.CHALLENGER]}
    assert versions == {challenger.split(":")[1]}
    text = httpx.get(f"{shadowed.url}/metrics", timeout=10).text
    counted = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == names.SHADOW
    }
    assert counted == {"scored": len(answers), "late": 0, "error": 0, "paused": 0}


def test_the_report_on_the_test_rows_gives_the_models_own_evaluation(
    answers: dict[str, httpx.Response],
    *,
    project: ScratchRepo,
    paths: Paths,
    shadow_dir: Path,
    test_rows: pd.DataFrame,
    project_schema: Schema,
    tmp_path: Path,
) -> None:
    labels = tmp_path / "labels.csv"
    target = project_schema.target.column
    frame = pd.DataFrame(
        {"id": test_rows[project_schema.id].astype(str), "label": test_rows[target]}
    )
    frame.to_csv(labels, index=False)
    markdown, document = tmp_path / "shadow.md", tmp_path / "shadow.json"
    done = project.run(
        sys.executable,
        "-m",
        "pipelines.monitoring.challenger",
        str(shadow_dir),
        "--labels",
        str(labels),
        "--markdown",
        str(markdown),
        "--json",
        str(document),
    )
    assert "Shadow scoring" in done.stdout
    report: dict[str, Any] = json.loads(document.read_text())
    assert report["rows"] == report["labelled"] == len(answers)
    assert report["unmatched"] == 0
    assert 0.0 < report["agreement"] <= 1.0
    # Served on every test row, the model's side is the pipeline's own evaluation of them
    evaluated = json.loads(paths.metrics.read_text())
    assert report["differences"]
    for name, difference in report["differences"].items():
        assert difference["champion"] == pytest.approx(evaluated[name], rel=1e-4), name
    assert markdown.read_text().startswith("## Shadow scoring")


def test_a_challenger_by_registry_alias_is_the_version_the_alias_names(
    project: ScratchRepo, shadow_env: dict[str, str], paths: Paths
) -> None:
    registry = json.loads(paths.registry.read_text())
    env = {**shadow_env, "MLFLOW_TRACKING_URI": tracking_uri(paths.mlflow)}

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=project.path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    store = ("-m", "pipelines.serving.store", "import", "--alias", "challenger")
    missing = python(*store)
    assert missing.returncode != 0
    assert "models:/" in missing.stderr
    assert "make model-alias" in missing.stderr
    alias = ("-m", "pipelines.release.alias", "--alias", "challenger")
    assert python(*alias, "--model-uri", registry["model_uri"]).returncode == 0
    imported = python(*store)
    assert imported.returncode == 0, imported.stderr
    tag = imported.stdout.split()[-1]
    shown = subprocess.run(
        [str(BIN / "bentoml"), "models", "get", tag, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    stored = json.loads(shown.stdout)
    # The registered version, downloaded from the registry: its own model file, its record
    assert stored["labels"]["mlflow_version"] == str(registry["version"])
    assert stored["labels"]["mlflow_run_id"] == registry["run_id"]
    meta = json.loads((paths.model / "meta.json").read_text())
    home = Path(shadow_env["BENTOML_HOME"]) / "models" / tag.replace(":", "/")
    assert (home / meta["file"]).read_bytes() == (paths.model / meta["file"]).read_bytes()
