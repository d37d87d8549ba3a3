"""The naive server, for real: what the load tests load and the serving tests compare with."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import load
from pipelines.schema import Schema
from tests.serving.test_batch import save_small_model
from tests.support.columns import ROOT


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    """A working directory with the project's params and schema and a small trained model."""
    directory = tmp_path_factory.mktemp("project")
    for name in ("params.yaml", "schema.yaml"):
        shutil.copy(ROOT / name, directory / name)
    save_small_model(directory / "models" / "model", raw, schema)
    return directory


@pytest.fixture(scope="session")
def naive(project: Path) -> Iterator[load.Running]:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.naive_server:create_app"]
    command += ["--factory", "--host", "127.0.0.1", "--port", "{port}"]
    server = load.Server("naive", "naive", command, "/predict", "/openapi.json", [], [], float)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with load.running(server, project / "naive.log", env, cwd=project) as started:
        yield started
    host, port = started.base.removeprefix("http://").split(":")
    with socket.socket() as sock:  # stopped: nothing listens on its port any more
        assert sock.connect_ex((host, int(port))) != 0


@pytest.fixture(scope="session")
def naive_url(naive: load.Running) -> str:
    return naive.base
