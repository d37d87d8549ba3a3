"""A team's shared services on 127.0.0.1: MLflow on PostgreSQL, artifacts in S3, a DVC remote.

tools/services.py starts PostgreSQL, SeaweedFS's S3 server and ``mlflow server
--serve-artifacts``; the session's trained copy of the project then logs and registers its model
there holding only the tracking URI, sets an alias, loads the model back by it, pushes its
outputs to a DVC remote in the same bucket, restores them from it, and a teammate's clone gets
the base of its report from the remote instead of reproducing it. ``-s`` shows the timeline.

The services need Debian's ``postgresql`` and the optional group ``shared``: outside CI a
machine without them skips; in CI (``.ci/run`` installs both) their absence fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.io import PipelineError
from pipelines.params import RegisterParams, load_paths, load_section
from pipelines.schema import read_raw
from tests.support.columns import PARAMS, project_schema
from tools.scratch import ScratchRepo
from tools.services import Services, running

pytestmark = pytest.mark.slow
PATHS = load_paths(PARAMS)
REMOTE = "team"


class Timeline:
    """Seconds per step, printed at the end (``pytest -s`` shows them)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self.steps.append((step, now - self.last))
        self.last = now

    def __str__(self) -> str:
        lines = [f"{seconds:7.1f} s  {step}" for step, seconds in self.steps]
        return "\n".join([*lines, f"{self.last - self.start:7.1f} s  in all"])


@pytest.fixture(scope="module")
def timeline() -> Iterator[Timeline]:
    steps = Timeline()
    yield steps
    print(f"\nshared services, seconds per step:\n{steps}")


@pytest.fixture(scope="module")
def services(timeline: Timeline) -> Iterator[Services]:
    """The services, stopped at the end of the module; nothing of them left running."""
    stack = contextlib.ExitStack()
    try:
        started = stack.enter_context(running())
    except (PipelineError, ImportError) as error:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"shared services: {error}")
    timeline("start PostgreSQL, SeaweedFS, mlflow server")
    with stack:
        yield started
    for what, pid in started.pids.items():  # stop() checked their process groups
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        print(f"{what} (pid {pid}) stopped")
    timeline("stop them, by pid")


def client_env(repo: ScratchRepo, tracking_uri: str) -> dict[str, str]:
    """The repository's environment with the tracking URI and no storage keys at all."""
    keys = ("AWS_", "MLFLOW_S3_ENDPOINT_URL")
    return {k: v for k, v in repo.env.items() if not k.startswith(keys)} | {
        "MLFLOW_TRACKING_URI": tracking_uri
    }


def cached_outputs(root: Path) -> list[Path]:
    """Every output DVC caches (and pushes): the stages' and the ``.dvc`` files'."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted(
            Path(out.fs_path).relative_to(root)
            for stage in repo.index.stages
            for out in stage.outs
            if out.use_cache
        )


def digest(path: Path) -> str:
    """One hash of a file, or of a folder's files with their names."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hashed = hashlib.sha256()
    for file in files:
        hashed.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return hashed.hexdigest()


def remove(paths: list[Path]) -> None:
    for path in paths:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_a_team_tracks_registers_and_shares_outputs_through_the_servers(
    services: Services,
    trained_repo: ScratchRepo,
    tmp_path: Path,
    timeline: Timeline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    import botocore.exceptions
    import mlflow
    from mlflow import MlflowClient

    s3 = boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=services.access_key,
        aws_secret_access_key=services.secret_key,
    )
    wrong = boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=services.access_key,
        aws_secret_access_key=services.secret_key[::-1],
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        wrong.list_objects_v2(Bucket=services.bucket)

    repo = trained_repo.copy(tmp_path / "team")
    repo.env = client_env(repo, services.tracking_uri)
    timeline("copy the trained repository")

    # The pipeline logs and registers on the server; the model goes through it into the bucket
    done = repo.dvc("repro", "--force", "--downstream", "register")
    assert services.tracking_uri in done.stdout
    record = json.loads(repo.read(str(PATHS.registry)))
    name = load_section("register", RegisterParams, repo.path / "params.yaml").model_name
    client = MlflowClient(tracking_uri=services.tracking_uri)
    run = client.get_run(record["run_id"])
    metrics = json.loads(repo.read(str(PATHS.metrics)))
    assert run.info.status == "FINISHED"
    assert run.data.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])
    version = client.get_model_version(name, str(record["version"]))
    assert version.run_id == record["run_id"]
    listed = s3.list_objects_v2(Bucket=services.bucket, Prefix="mlflow/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    model_id = version.source.rsplit("/", 1)[-1]  # models:/m-<id>, MLflow 3's logged model
    assert [k for k in keys if model_id in k and k.endswith("/MLmodel")], (version.source, keys)
    timeline("dvc repro: register (and card) on the server")

    alias = repo.run("make", "--no-print-directory", "model-alias", "ALIAS=staging")
    assert "is now version" in alias.stdout, alias.stdout
    assert client.get_model_version_by_alias(name, "staging").version == version.version
    timeline("make model-alias ALIAS=staging")

    # Anyone with the tracking URI loads the registered model and scores raw rows with it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services.tracking_uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    model = mlflow.pyfunc.load_model(f"models:/{name}@staging")
    schema = project_schema()
    predictions = pd.read_csv(repo.path / PATHS.predictions).head(50)
    raw = read_raw(repo.path / PATHS.raw).set_index(schema.id).loc[predictions["id"]]
    rows = raw[list(schema.features)].reset_index(drop=True)
    scores = model.predict(rows)
    np.testing.assert_allclose(scores, predictions["probability"], rtol=0, atol=1e-6)
    timeline("load models:/<name>@staging from the server, score raw rows")

    # A DVC remote in the same bucket: its keys in .dvc/config.local, out of git
    repo.dvc("remote", "add", "-d", REMOTE, services.dvc_remote)
    repo.dvc("remote", "modify", REMOTE, "endpointurl", services.s3_endpoint)
    keys_local = {"access_key_id": services.access_key, "secret_access_key": services.secret_key}
    for option, value in keys_local.items():
        repo.dvc("remote", "modify", "--local", REMOTE, option, value)
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "registered on the team's server; the team's DVC remote")
    assert services.secret_key not in repo.run("git", "show", "HEAD").stdout
    base = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    repo.dvc("push")
    outputs = cached_outputs(repo.path)
    assert PATHS.model in outputs
    assert PATHS.data in outputs
    before = {path: digest(repo.path / path) for path in outputs}
    timeline(f"dvc push ({len(outputs)} outputs)")

    remove([repo.path / ".dvc" / "cache", *(repo.path / path for path in outputs)])
    repo.dvc("pull")
    assert {path: digest(repo.path / path) for path in outputs} == before
    assert "up to date" in repo.dvc("status").stdout
    timeline("empty the cache and the outputs, dvc pull")

    # A teammate's clone: the report finds the base's outputs on the remote, not by reproducing
    clone_path = tmp_path / "teammate"
    repo.run("git", "clone", "-q", str(repo.path), str(clone_path))
    env = {k: v.replace(str(repo.path), str(clone_path)) for k, v in repo.env.items()}
    clone = ScratchRepo(clone_path, env)
    (clone_path / ".scratch-home").mkdir()
    for option, value in keys_local.items():
        clone.dvc("remote", "modify", "--local", REMOTE, option, value)
    clone.dvc("pull")
    remove([clone_path / ".dvc" / "cache"])  # the workspace's outputs stay, BASE's must come
    report = clone.run("make", "--no-print-directory", "report", f"BASE={base}", check=False)
    said = report.stdout + report.stderr
    assert report.returncode == 0, said[-4000:]
    assert "from DVC" in said, said[-4000:]
    assert "reproduc" not in said, said[-4000:]
    gate = json.loads((clone_path / "reports" / "gate.json").read_text())
    assert gate["exit_code"] == 0
    timeline("second clone: dvc pull, empty cache, make report BASE=<pushed commit>")
