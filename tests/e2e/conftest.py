"""A real `bentoml serve` of a model the real pipeline trained, in a scratch copy of the project.

The pipeline runs once per session in a temporary git repository (a fresh clone holds no model),
its model is imported into a temporary BentoML home, and the service is started on a free port
of 127.0.0.1 as `make serve` starts it, with API keys on (``MODEL_API_KEYS_FILE``, two keys
valid at once, as in a rotation). Tests talk to it over HTTP with
:data:`tests.support.serving.API_KEY`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from pipelines.params import Paths, load_paths
from pipelines.schema import Schema, load_schema, read_raw
from pipelines.serving import keys
from tests.support.serving import (
    API_KEY,
    API_KEY_NAME,
    AUTHORIZED,
    ROTATED_KEY,
    ROTATED_KEY_NAME,
    Server,
    import_model,
    start,
)
from tools.scratch import ScratchRepo


@pytest.fixture(scope="session")
def project(trained_repo: ScratchRepo) -> ScratchRepo:
    """A scratch copy of the project where `make data` and `dvc repro` have run."""
    return trained_repo


@pytest.fixture(scope="session")
def bentoml_env(project: ScratchRepo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return project.env | {
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")),
        "BENTOML_DO_NOT_TRACK": "True",
    }


@pytest.fixture(scope="session")
def tag(project: ScratchRepo, bentoml_env: dict[str, str]) -> str:
    """The model imported into the temporary BentoML store, as `make serve` imports it."""
    return import_model(project, bentoml_env)


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(
        "# the tests' keys\n"
        f"{keys.digest(API_KEY)} {API_KEY_NAME}\n"
        f"{keys.digest(ROTATED_KEY)} {ROTATED_KEY_NAME}\n"
    )
    return path


@pytest.fixture(scope="session")
def server(
    project: ScratchRepo,
    bentoml_env: dict[str, str],
    tag: str,
    key_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    env = bentoml_env | {keys.ENVIRONMENT: str(key_file)}
    server = start(project, env, tag, tmp_path_factory.mktemp("logs") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    """A client of the session server that sends its API key."""
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTHORIZED) as client:
        yield client


@pytest.fixture(scope="session")
def paths(project: ScratchRepo) -> Paths:
    """The project's paths, relative to the scratch copy."""
    relative = load_paths(project.path / "params.yaml")
    return Paths.model_validate(
        {name: project.path / value for name, value in relative.model_dump(by_alias=True).items()}
    )


@pytest.fixture(scope="session")
def project_schema(paths: Paths) -> Schema:
    return load_schema(paths.schema_)


@pytest.fixture(scope="session")
def test_rows(paths: Paths, project_schema: Schema) -> pd.DataFrame:
    """Raw rows of the test split with the pipeline's probability (eval/predictions.csv)."""
    raw = read_raw(paths.raw)
    predictions = pd.read_csv(paths.predictions)
    joined = predictions.merge(raw, left_on="id", right_on=project_schema.id, how="left")
    assert len(joined) == len(predictions)
    assert joined[project_schema.id].notna().all()
    return joined


@pytest.fixture(scope="session")
def registry(paths: Paths) -> dict[str, Any]:
    return dict(json.loads(paths.registry.read_text()))
