"""`make bento` for real, in a scratch copy of the project with its own BentoML home."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.scratch import ROOT, ScratchRepo

pytestmark = pytest.mark.slow


def test_make_bento_builds_a_traceable_bento_of_the_current_model(tmp_path: Path) -> None:
    if not (ROOT / "models/model/meta.json").exists():
        pytest.skip("no trained model in the workspace: run `make run` first")
    repo = ScratchRepo.create(tmp_path / "project")
    shutil.copytree(ROOT / "models/model", repo.path / "models/model")
    home = tmp_path / "bentoml"
    repo.env |= {"UV_PROJECT_ENVIRONMENT": sys.prefix, "BENTOML_HOME": str(home)}

    repo.run("make", "bento")

    report = json.loads(repo.read("reports/bento.json"))
    name, _, version = report["tag"].partition(":")
    commit = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    labels = report["labels"]
    assert labels["git_commit"] == commit
    assert labels["data_md5"] == yaml.safe_load(repo.read("data.dvc"))["outs"][0]["md5"]
    assert labels["roc_auc"] == str(json.loads(repo.read("eval/metrics.json"))["roc_auc"])
    assert "mlflow_run_id" not in labels  # the copy has no MLflow registration
    bento_dir = home / "bentos" / name / version
    stored = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert stored["labels"] == labels
    assert stored["service"] == "pipelines.service:ChurnService"

    sources = {
        p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*.py")
    }
    assert "pipelines/service.py" in sources
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
        assert (
            exported.extractfile(files[model[0]]).read()
            == (ROOT / "models/model/model.ubj").read_bytes()
        )
    assert report["models"] == [f"{name}:{model[0].split('/')[2]}"]
