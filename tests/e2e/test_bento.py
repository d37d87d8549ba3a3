"""`make bento` for real, in a scratch copy of the project with its own BentoML home.

Also what a re-run of the release does with that bento: the same inputs give the same version,
and `make image` with a tag the registry already holds builds nothing and takes its digest.
"""

from __future__ import annotations

import json
import sys
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.release.bento import current_labels, current_version
from pipelines.serving import shadow
from tests.support.registries import push_manifest
from tools.scratch import ROOT, ScratchRepo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bento_repo(trained_repo: ScratchRepo, tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """The trained copy with a BentoML home of its own, where `make bento` has run once."""
    home = tmp_path_factory.mktemp("bentoml")
    repo = ScratchRepo(trained_repo.path, trained_repo.env | {"BENTOML_HOME": str(home)})
    repo.run("make", "bento")
    return repo


def bento_tag(repo: ScratchRepo) -> str:
    return str(json.loads(repo.read("reports/bento.json"))["tag"])


def test_make_bento_builds_a_traceable_bento_of_the_current_model(
    bento_repo: ScratchRepo, tmp_path: Path
) -> None:
    repo = bento_repo
    home = Path(repo.env["BENTOML_HOME"])
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
    for package in ("xgboost-cpu", "bentoml", "treelite", "pandas"):
        assert f"{package}=={versions[package]}" in requirements
    tools = ("mlflow", "dvc", "great-expectations", "scikit-learn", "skops")
    assert not [r for r in requirements if r.startswith(tools)]

    # The exported bento (what an image is built from) carries the model, byte for byte.
    archive = tmp_path / "bento.tar"
    repo.run(str(Path(sys.executable).parent / "bentoml"), "export", report["tag"], str(archive))
    with tarfile.open(archive) as exported:
        files = {m.name.removeprefix("./"): m for m in exported.getmembers() if m.isfile()}
        model = [n for n in files if n.startswith("models/") and n.endswith("model.ubj")]
        assert len(model) == 1
        assert exported.extractfile(files[model[0]]).read() == repo.read("models/model/model.ubj")
    assert report["models"] == [f"{name}:{model[0].split('/')[2]}"]


@contextmanager
def changed(repo: ScratchRepo, relative: str, change: Callable[[bytes], bytes]) -> Iterator[None]:
    """Change a file of the shared copy for the block, then put it back as it was."""
    path = repo.path / relative
    before = path.read_bytes()
    path.write_bytes(change(before))
    try:
        yield
    finally:
        path.write_bytes(before)


def test_the_bento_version_follows_its_inputs(
    bento_repo: ScratchRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = bento_repo
    monkeypatch.chdir(repo.path)  # the version is read from the copy's files, nothing is built
    built = json.loads(repo.read("reports/bento.json"))
    labels = current_labels()

    def version() -> str:
        return current_version(Path("bentofile.yaml"), labels)

    first = version()
    assert built["tag"] == f"{built['tag'].partition(':')[0]}:{first}"
    assert version() == first
    with changed(repo, "pipelines/serving/http.py", lambda b: b + b"\n# a change\n"):
        edited = version()
    with changed(repo, "models/model/meta.json", lambda b: b.rstrip() + b"\n\n"):
        retrained = version()
    # The Dockerfile template is not in `include`, but BentoML copies it into the bento
    with changed(repo, "pipelines/release/Dockerfile.template", lambda b: b + b"\n"):
        templated = version()
    # A challenger for shadow scoring is packed beside the model (the service declares it)
    with monkeypatch.context() as shadowing:
        shadowing.setenv(shadow.VARIABLE, "some-model:0123456789abcdef0123")
        challenged = version()
    assert len({first, edited, retrained, templated, challenged}) == 5
    assert version() == first


def test_a_rerun_of_the_image_job_takes_the_pushed_tag_from_the_registry(
    bento_repo: ScratchRepo, image_registry: str
) -> None:
    repo = bento_repo
    name, _, version = bento_tag(repo).partition(":")
    commit = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    digest = push_manifest(image_registry, name, f"{version}-{commit[:7]}")  # the first run's push
    repository = f"{image_registry}/{name}"

    built = repo.run("make", "image", f"IMAGE_REPO={repository}", "BACKEND=buildah").stdout
    assert "not built again" in built
    assert "building" not in built
    report = json.loads(repo.read("reports/image.json"))
    assert report["image"] == f"{repository}:{version}-{commit[:7]}"
    assert report["digest_ref"] == f"{repository}@{digest}"
    assert report["already_pushed"] is True

    assert "nothing to push" in repo.run("make", "push").stdout
    assert json.loads(repo.read("reports/image.json")) == report

    other = {**report, "digest_ref": f"{repository}@sha256:{'0' * 64}", "already_pushed": False}
    (repo.path / "reports/image.json").write_text(json.dumps(other))
    refused = repo.run("make", "push", check=False)
    assert refused.returncode != 0
    assert f"already exists in its registry as {digest}" in refused.stderr
