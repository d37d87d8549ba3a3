"""`make bento` for real, in a scratch copy of the project with its own BentoML home."""

from __future__ import annotations

import json
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.scratch import ROOT, ScratchRepo

pytestmark = pytest.mark.slow


def test_make_bento_builds_a_traceable_bento_of_the_current_model(
    trained_repo: ScratchRepo, tmp_path: Path
) -> None:
    home = tmp_path / "bentoml"
    repo = ScratchRepo(trained_repo.path, trained_repo.env | {"BENTOML_HOME": str(home)})

    repo.run("make", "bento")

    report = json.loads(repo.read("reports/bento.json"))
    name, _, version = report["tag"].partition(":")
    commit = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    labels = report["labels"]
    assert labels["git_commit"] == commit
    assert labels["data_md5"] == yaml.safe_load(repo.read("data.dvc"))["outs"][0]["md5"]
    assert labels["roc_auc"] == str(json.loads(repo.read("eval/metrics.json"))["roc_auc"])
    assert labels["mlflow_run_id"] == json.loads(repo.read("models/registry.json"))["run_id"]
    bento_dir = home / "bentos" / name / version
    stored = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert stored["labels"] == labels
    assert stored["service"] == "pipelines.serving.service:ModelService"

    sources = {
        p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*.py")
    }
    assert "pipelines/serving/service.py" in sources
    assert not [s for s in sources if s.startswith(("tests/", "benchmarks/"))]
    assert not (bento_dir / "src" / "data").exists()

    versions = {
        p["name"]: p["version"]
        for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
        if "version" in p
    }
    requirements = (bento_dir / "env/python/requirements.txt").read_text().splitlines()
    for package in ("xgboost", "bentoml", "scikit-learn", "pandas"):
        assert f"{package}=={versions[package]}" in requirements
    assert not [r for r in requirements if r.startswith(("mlflow", "dvc", "great-expectations"))]

    # The exported bento (what an image is built from) carries the model, byte for byte.
    archive = tmp_path / "bento.tar"
    repo.run(str(Path(sys.executable).parent / "bentoml"), "export", report["tag"], str(archive))
    with tarfile.open(archive) as exported:
        files = {m.name.removeprefix("./"): m for m in exported.getmembers() if m.isfile()}
        model = [n for n in files if n.startswith("models/") and n.endswith("model.ubj")]
        assert len(model) == 1
        assert exported.extractfile(files[model[0]]).read() == repo.read("models/model/model.ubj")
    assert report["models"] == [f"{name}:{model[0].split('/')[2]}"]
