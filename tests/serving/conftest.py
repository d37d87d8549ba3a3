"""A real `bentoml serve` of a model the real pipeline trained, in a scratch copy of the project.

The pipeline runs once per session in a temporary git repository (a fresh clone holds no model),
its model is imported into a temporary BentoML home, and the service is started on a free port
of 127.0.0.1 as `make serve` starts it. Tests talk to it over HTTP.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from pipelines.params import Paths, load_paths
from pipelines.schema import Schema, load_schema, read_raw
from tests.scratch import BIN, ScratchRepo

STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def records(rows: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """Raw rows as JSON request records: feature columns only, missing values as null."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows[list(schema.features)].to_dict("records")
    ]


@dataclass
class Server:
    """A running `bentoml serve` and the project copy it serves from."""

    repo: ScratchRepo
    process: subprocess.Popen[bytes]
    url: str
    tag: str
    env: dict[str, str]
    log: Path

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful), then SIGKILL of the whole process group if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)

    def params(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.repo.path / "params.yaml").read_text()))


def start(repo: ScratchRepo, env: dict[str, str], tag: str, log: Path) -> Server:
    """Start `bentoml serve` in ``repo`` and wait until /readyz answers 200."""
    command = [str(BIN / "bentoml"), "serve", "pipelines.serving.service:ModelService"]
    command += ["--host", "127.0.0.1", "--port", "{port}"]
    return launch(repo, command, env, tag, log, ready="/readyz")


def launch(
    repo: ScratchRepo, command: list[str], env: dict[str, str], tag: str, log: Path, *, ready: str
) -> Server:
    """Start ``command`` (``{port}`` is a free port) in ``repo``; wait until ``ready`` is 200."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            cwd=repo.path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every worker
        )
    server = Server(repo, process, f"http://127.0.0.1:{port}", tag, env, log)
    name = " ".join(Path(command[0]).name.split() + command[1:2])
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited {process.returncode}:\n{log.read_text()[-5000:]}")
        try:
            if httpx.get(f"{server.url}{ready}", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    pytest.fail(f"{name} not ready after {STARTUP_SECONDS} s:\n{log.read_text()[-5000:]}")


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


def import_model(repo: ScratchRepo, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.serving.store", "import"],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="session")
def tag(project: ScratchRepo, bentoml_env: dict[str, str]) -> str:
    """The model imported into the temporary BentoML store, as `make serve` imports it."""
    return import_model(project, bentoml_env)


@pytest.fixture(scope="session")
def server(
    project: ScratchRepo,
    bentoml_env: dict[str, str],
    tag: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    server = start(project, bentoml_env, tag, tmp_path_factory.mktemp("logs") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
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
