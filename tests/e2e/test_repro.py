"""The real pipeline: `make data` + `dvc repro` in a temporary git repository."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.features import in_test, read_features
from pipelines.params import (
    DataParams,
    EvaluateParams,
    FeaturizeParams,
    GateParams,
    load_paths,
    load_section,
)
from pipelines.release.lockcheck import compare_locks
from pipelines.schema import read_raw
from tests.support.columns import PARAMS, breaking, pick, project_schema
from tools.scratch import STAGES, FreshClone, ScratchRepo, ran

RAW = str(load_paths(PARAMS).raw)  # the raw table, relative to the project

pytestmark = pytest.mark.slow


Pipeline = FreshClone  # a scratch repository where `make run` ran once


@pytest.fixture(scope="module")
def pipeline(fresh_clone: FreshClone) -> Pipeline:
    """`make run` in a fresh copy on a machine without uv (tests/conftest.py)."""
    return fresh_clone


@pytest.fixture
def repo(pipeline: Pipeline) -> ScratchRepo:
    return pipeline.repo


@pytest.fixture
def committed_params(repo: ScratchRepo) -> Iterator[None]:
    """Put back the committed params.yaml and its outputs after a test that changes them.

    The copy is shared by the module's tests: one failing halfway must not leave the next ones
    other params or another model.
    """
    yield
    repo.run("git", "checkout", "--", "params.yaml")
    repo.dvc("repro")


def use_tracking_uri(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """Point MLflow at ``uri`` for this test only (``models:/`` URIs resolve through it).

    Through the environment, which monkeypatch restores, rather than ``mlflow.set_tracking_uri``:
    that one sets a process-wide URI and exports it to every later subprocess.
    """
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert mlflow.get_tracking_uri() == uri, "something set MLflow's tracking URI for the process"


def test_make_run_gets_the_data_and_runs_every_stage(pipeline: Pipeline) -> None:
    repo = pipeline.repo
    assert "verified against data.dvc" in pipeline.first.stdout
    assert ran(pipeline.first.stdout) == set(STAGES)
    assert "eval/metrics.json" in pipeline.first.stdout.splitlines()[-1]  # dvc metrics show
    # Nothing tracked by git changes but the MLflow run id that register records in dvc.lock
    changed = repo.run("git", "status", "--porcelain", "--untracked-files=all").stdout
    assert [line[3:] for line in changed.splitlines()] in ([], ["dvc.lock"])
    metrics = json.loads(repo.read("eval/metrics.json"))
    for name in ("roc_auc", "pr_auc", "brier", "accuracy", "precision", "recall", "f1"):
        assert 0 <= metrics[name] <= 1, name  # NaN compares false: it fails here too
    assert 0 <= metrics["log_loss"] < math.inf
    gate = load_section("gate", GateParams, PARAMS)
    for name, rule in gate.metrics.items():  # the model clears the gate's floors and ceilings
        assert rule.floor is None or metrics[name] >= rule.floor, name
        assert rule.ceiling is None or metrics[name] <= rule.ceiling, name
    raw = read_raw(repo.path / RAW)
    split = load_section("featurize", FeaturizeParams, PARAMS)
    schema = project_schema()
    assert metrics["rows"] == in_test(raw[schema.id], split.test_size, split.seed).sum() > 0
    segments = json.loads(repo.read("eval/segments.json"))
    assert set(segments) == set(load_section("evaluate", EvaluateParams, PARAMS).segments)
    for column in segments:
        assert sum(s["rows"] for s in segments[column].values()) == metrics["rows"]
    predictions = repo.read("eval/predictions.csv").decode().splitlines()
    assert predictions[0] == "id,label,probability,predicted"
    assert len(predictions) == 1 + metrics["rows"]
    for plot in ("roc", "precision_recall", "calibration", "importance"):
        assert json.loads(repo.read(f"eval/plots/{plot}.json"))
    meta = json.loads(repo.read("models/model/meta.json"))
    assert meta["kind"] == "xgboost"
    assert (repo.path / "models/model/model.ubj").stat().st_size > 0
    assert json.loads(repo.read("reports/validation.json"))["success"] is True


def test_make_installs_uv_when_the_machine_has_none(pipeline: Pipeline) -> None:
    """A fresh machine has Python, make and git: `make run` fetched uv itself and said so."""
    repo = pipeline.repo
    assert "uv is not on PATH: installing uv" in pipeline.first.stderr  # stdout stays the tools'
    local_uv = repo.path / ".tools/bin/uv"
    assert local_uv.is_file()
    assert f"{local_uv} sync --locked" in pipeline.first.stdout
    # ... and `make test` goes on with it, without installing it again
    done = repo.run("make", "test", "PYTEST_ARGS=-q -p no:cacheprovider tests/test_params.py")
    assert "installing uv" not in done.stdout + done.stderr
    assert f"{local_uv} run --locked pytest" in done.stdout
    assert " passed" in done.stdout.splitlines()[-1]
    assert not repo.run("git", "status", "--porcelain", "--", ".tools").stdout  # git-ignored


def test_the_lock_file_in_git_is_what_the_code_and_data_reproduce(repo: ScratchRepo) -> None:
    """A stale dvc.lock would claim metrics and a model that the code does not produce."""
    committed = yaml.safe_load(repo.run("git", "show", "HEAD:dvc.lock").stdout)
    reproduced = yaml.safe_load(repo.read("dvc.lock"))
    # register's output names this machine's MLflow run, and the card quotes it: so only their
    # inputs can match (check-lock's own rule)
    stale = compare_locks(committed, reproduced)
    assert not stale, f"dvc.lock is stale: {stale}: run `make repro` and commit dvc.lock"


def test_run_is_logged_and_registered_in_mlflow(
    repo: ScratchRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    record = json.loads(repo.read("models/registry.json"))
    data_md5 = yaml.safe_load(repo.read("data.dvc"))["outs"][0]["md5"]
    commit = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    assert record["data_md5"] == data_md5
    assert record["git_commit"] == commit

    import mlflow

    uri = f"sqlite:///{repo.path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(record["run_id"])
    metrics = json.loads(repo.read("eval/metrics.json"))
    assert run.data.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert run.data.params["xgboost.max_depth"] == "3"
    assert run.data.tags["data_md5"] == data_md5
    assert run.data.tags["git_commit"] == commit
    version = client.get_model_version(record["model_name"], str(record["version"]))
    assert version.run_id == record["run_id"]

    use_tracking_uri(monkeypatch, uri)
    info = mlflow.models.get_model_info(record["model_uri"])
    assert info.flavors.keys() == {"python_function"}
    # Its signature is the schema's feature columns; its example, raw test rows
    schema = project_schema()
    assert info.signature.inputs.input_names() == list(schema.features)
    example = pd.read_json(
        Path(mlflow.artifacts.download_artifacts(f"{record['model_uri']}/input_example.json")),
        orient="split",
    )
    assert list(example.columns) == list(schema.features)
    # The registered model is the one the pipeline evaluated: raw rows in, the same
    # probabilities out, row for row
    assert_scores_raw_rows_as_evaluated(repo, record["model_uri"])


def raw_test_rows(repo: ScratchRepo) -> tuple[pd.DataFrame, pd.Series]:
    """The raw rows of the test set, as read_raw reads them, and their evaluated probability."""
    predictions = pd.read_csv(repo.path / "eval/predictions.csv")
    _, _, ids = read_features(repo.path / "features/test.parquet")
    np.testing.assert_array_equal(ids, predictions["id"])
    schema = project_schema()
    raw = read_raw(repo.path / RAW).set_index(schema.id).loc[predictions["id"]]
    return raw[list(schema.features)].reset_index(drop=True), predictions["probability"]


def assert_scores_raw_rows_as_evaluated(repo: ScratchRepo, model_uri: str) -> None:
    import mlflow

    rows, probability = raw_test_rows(repo)
    registered = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_allclose(registered.predict(rows), probability, rtol=0, atol=1e-6)


def test_second_repro_runs_nothing(repo: ScratchRepo) -> None:
    again = repo.dvc("repro")
    assert ran(again.stdout) == set()
    assert "Data and pipelines are up to date" in repo.dvc("status").stdout


def test_metrics_and_params_are_visible_to_dvc(repo: ScratchRepo) -> None:
    shown = json.loads(repo.dvc("metrics", "show", "--json").stdout)
    workspace = shown[""]["data"]  # the workspace
    metrics = json.loads(repo.read("eval/metrics.json"))
    assert workspace["eval/metrics.json"]["data"]["roc_auc"] == metrics["roc_auc"]
    params = json.loads(repo.dvc("params", "diff", "--all", "--json").stdout)
    assert "params.yaml" in params


@pytest.mark.usefixtures("committed_params")
def test_changing_a_train_param_reruns_only_downstream_stages(repo: ScratchRepo) -> None:
    model_before = repo.read("models/model/model.ubj")
    done = repo.dvc("exp", "run", "-S", "train.xgboost.max_depth=2")
    assert ran(done.stdout) == {"train", "evaluate", "profile", "register", "card"}
    assert repo.read("models/model/model.ubj") != model_before
    # Back to the committed params: the run-cache restores the earlier model instead of refitting
    repo.run("git", "checkout", "--", "params.yaml")
    restored = repo.dvc("repro")
    assert "train" not in ran(restored.stdout)
    assert repo.read("models/model/model.ubj") == model_before


def test_corrupt_data_stops_at_validate_and_keeps_the_model(repo: ScratchRepo) -> None:
    model_before = repo.read("models/model/model.ubj")
    metrics_before = repo.read("eval/metrics.json")
    raw = repo.path / RAW
    original = raw.read_bytes()
    schema = project_schema()
    column = pick(schema, "category") or next(iter(schema.features))
    value = breaking(schema.features[column])
    frame = read_raw(raw).astype({column: object})
    frame.loc[frame.index[4], column] = value
    frame.to_csv(raw, index=False)
    try:
        failed = repo.dvc("repro", check=False)
        assert failed.returncode != 0
        output = failed.stdout + failed.stderr
        assert f"{column}: expected" in output
        assert repr(value) in output
        assert ran(failed.stdout) == {"validate"}
        assert repo.read("models/model/model.ubj") == model_before
        assert repo.read("eval/metrics.json") == metrics_before
        report = json.loads(repo.read("reports/validation.json"))
        assert report["success"] is False
    finally:
        raw.write_bytes(original)


def test_data_bootstrap_refuses_a_table_that_does_not_match_data_dvc(repo: ScratchRepo) -> None:
    dvc_file = repo.path / "data.dvc"
    original = dvc_file.read_text()
    moved = repo.path / "data-aside"
    (repo.path / "data").rename(moved)
    try:
        md5 = yaml.safe_load(original)["outs"][0]["md5"]
        dvc_file.write_text(original.replace(md5, "0" * 32 + ".dir"))
        done = repo.python("-m", "pipelines.stages.data", check=False)
        assert done.returncode == 1
        if load_section("data", DataParams, PARAMS).offline:
            assert "does not match the hash in data.dvc" in done.stderr
            assert "dvc add data" in done.stderr
        else:  # no packaged copy to build, and DVC has no table with that hash
            assert "DVC could not restore it" in done.stderr
    finally:
        dvc_file.write_text(original)
        shutil.rmtree(repo.path / "data", ignore_errors=True)
        moved.rename(repo.path / "data")


@pytest.mark.usefixtures("committed_params")
def test_the_baseline_is_registered_with_its_skops_file_and_scores_raw_rows(
    repo: ScratchRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    done = repo.dvc("exp", "run", "-S", "train.model=logistic_regression")
    assert ran(done.stdout) == {"train", "evaluate", "profile", "register", "card"}
    record = json.loads(repo.read("models/registry.json"))
    use_tracking_uri(monkeypatch, f"sqlite:///{repo.path / 'mlruns' / 'mlflow.db'}")
    model = Path(mlflow.artifacts.download_artifacts(f"{record['model_uri']}/artifacts/model"))
    assert json.loads((model / "meta.json").read_text())["kind"] == "logistic_regression"
    # nothing pickled, the fallback baseline's folder included
    assert {p.suffix for p in model.rglob("*") if p.is_file()} == {".json", ".skops"}
    assert_scores_raw_rows_as_evaluated(repo, record["model_uri"])


def test_data_comes_from_the_dvc_remote_when_one_is_configured(
    repo: ScratchRepo, tmp_path: Path
) -> None:
    repo.dvc("remote", "add", "--local", "-d", "shared", str(tmp_path / "remote"))
    try:
        repo.dvc("push", "data.dvc")
        raw = repo.read(RAW)
        shutil.rmtree(repo.path / "data")
        # An empty cache, as on a fresh clone: the data can only come from the remote
        repo.dvc("cache", "dir", "--local", str(tmp_path / "empty-cache"))
        done = repo.python("-m", "pipelines.stages.data")
        assert "restored by DVC" in done.stdout
        assert "materializing" not in done.stdout
        assert repo.read(RAW) == raw
        assert (tmp_path / "empty-cache").exists()
    finally:
        repo.dvc("remote", "remove", "--local", "shared")
        repo.dvc("cache", "dir", "--local", "--unset")


def test_data_is_restored_from_the_local_dvc_cache_first(repo: ScratchRepo) -> None:
    raw = repo.read(RAW)
    shutil.rmtree(repo.path / "data")
    done = repo.python("-m", "pipelines.stages.data")
    assert "restored by DVC" in done.stdout
    assert "materializing" not in done.stdout
    assert repo.read(RAW) == raw


def test_without_an_offline_source_missing_data_is_a_clear_error(
    repo: ScratchRepo, tmp_path: Path
) -> None:
    params = repo.path / "params.yaml"
    original = params.read_text()
    document = yaml.safe_load(original)
    document["data"] = {}  # a table that only lives in DVC
    params.write_text(yaml.safe_dump(document, sort_keys=False))
    (repo.path / "data").rename(tmp_path / "data")
    repo.dvc("cache", "dir", "--local", str(tmp_path / "empty-cache"))
    # and no remote: a generated project's default remote (dvc-store/) would restore it
    repo.dvc("remote", "default", "--unset")
    try:
        done = repo.python("-m", "pipelines.stages.data", check=False)
        assert done.returncode == 1
        assert done.stderr.startswith("error: ")
        assert "no offline source" in done.stderr
        assert "dvc remote add" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        repo.dvc("cache", "dir", "--local", "--unset")
        repo.run("git", "checkout", "--", ".dvc/config")
        params.write_text(original)
        (tmp_path / "data").rename(repo.path / "data")
