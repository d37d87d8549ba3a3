"""The lean-image checks and the locked-down run of `make image-e2e`, against the real manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from pipelines.core.io import PipelineError
from tests.support.columns import ROOT
from tools import image_checks

# ld.so (the dynamic loader) and ldd are in every Debian image: not build tools.
LEAN_PROGRAMS = ["bash", "python3", "python3.11", "pip", "bentoml", "sh", "ld.so", "ldd"]
LEAN_PACKAGES = ["bentoml", "xgboost-cpu", "numpy", "nvidia-ml-py", "scikit-learn"]


def test_a_lean_image_under_the_target_has_no_problem() -> None:
    assert image_checks.image_problems(LEAN_PROGRAMS, LEAN_PACKAGES, 490_000_000) == []


@pytest.mark.parametrize(
    ("programs", "packages", "size", "problem"),
    [
        (["gcc"], [], 1, "build tools on PATH: gcc"),
        (["x86_64-linux-gnu-gcc-12", "cc", "c++"], [], 1, "c\\+\\+, cc, x86_64-linux-gnu-gcc-12"),
        (["ld", "as"], [], 1, "as, ld"),
        (["git", "git-upload-pack"], [], 1, "git, git-upload-pack"),
        ([], ["xgboost"], 1, r"GPU packages: xgboost \(use xgboost-cpu\)"),
        ([], ["nvidia-nccl-cu12", "nvidia-cublas-cu12"], 1, "nvidia-cublas-cu12, nvidia-nccl"),
        ([], [], 2_100_000_000, "2100 MB, over the 500 MB target"),
        ([], [], 500_000_001, "500 MB, over the 500 MB target"),
        ([], [], None, "could not be measured"),
    ],
)
def test_each_kind_of_fat_is_named(
    programs: list[str], packages: list[str], size: int | None, problem: str
) -> None:
    problems = image_checks.image_problems(LEAN_PROGRAMS + programs, LEAN_PACKAGES + packages, size)
    assert len(problems) == 1
    assert re.search(problem, problems[0]), problems


def test_the_listing_is_split_into_programs_and_normalized_distributions() -> None:
    output = (
        "python3\nbash\npython3\n--- site-packages\nxgboost_cpu-3.2.0.dist-info\n"
        "xgboost\nnvidia_ml_py-13.615.71.dist-info\nnumpy.libs\n"
    )
    programs, packages = image_checks.parse_listing(output)
    assert programs == ["bash", "python3"]
    assert packages == ["nvidia-ml-py", "xgboost-cpu"]
    with pytest.raises(PipelineError, match="incomplete"):
        image_checks.parse_listing("python3\nbash\n")


def test_the_listing_runs_in_a_shell_and_finds_this_hosts_tools(tmp_path) -> None:
    """The listing command itself, run by sh here: a host with gcc shows it as a problem."""
    site = tmp_path / "app/.venv/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (site / "xgboost-3.2.0.dist-info").mkdir()
    command = image_checks.LISTING.replace("/app/", f"{tmp_path}/app/")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    programs, packages = image_checks.parse_listing(output.stdout)
    assert "sh" in programs
    assert packages == ["xgboost"]
    problems = image_checks.image_problems(programs, packages, 1)
    assert any("GPU packages: xgboost" in p for p in problems)
    if shutil.which("gcc"):
        assert any(p.startswith("build tools on PATH") and "gcc" in p for p in problems)


@pytest.fixture(scope="module")
def staging() -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    overlay = ROOT / "deploy" / "overlays" / "staging"
    return subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout


def test_image_e2e_writes_where_the_deployment_mounts_its_emptydirs_and_nowhere_else(
    staging: str,
) -> None:
    deployment = next(d for d in yaml.safe_load_all(staging) if d and d.get("kind") == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = sorted(m["mountPath"] for m in container["volumeMounts"])
    lock = image_checks.lockdown(staging)
    args = image_checks.podman_run_args(lock)

    assert sorted(image_checks.tmpfs_paths(args)) == mounts
    assert {"--read-only", "--read-only-tmpfs=false"} <= set(args)
    assert args[args.index("--user") + 1] == "1034:1034"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for variable in container["env"]:
        assert f"{variable['name']}={variable['value']}" in args
    # The request log and BentoML's home are among the writable paths the service uses.
    assert lock.env["MODEL_REQUEST_LOG_DIR"] in mounts
    assert lock.env["BENTOML_HOME"] in mounts
    assert "/tmp" in mounts  # noqa: S108 (the container's /tmp, an emptyDir)
    overridden = image_checks.podman_run_args(lock, {"MODEL_REQUEST_LOG_RATE": "1"})
    assert "MODEL_REQUEST_LOG_RATE=1" in overridden
    assert f"MODEL_REQUEST_LOG_RATE={lock.env['MODEL_REQUEST_LOG_RATE']}" not in overridden


def _edited(staging: str, edit) -> str:
    documents = [d for d in yaml.safe_load_all(staging) if d]
    for document in documents:
        if document.get("kind") == "Deployment":
            edit(document["spec"]["template"]["spec"])
    return yaml.safe_dump_all(documents)


def test_a_writable_root_or_a_volume_other_than_emptydir_is_refused(staging: str) -> None:
    def writable_root(pod) -> None:
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False

    def host_path(pod) -> None:
        pod["volumes"][0] = {"name": pod["volumes"][0]["name"], "hostPath": {"path": "/srv"}}

    with pytest.raises(PipelineError, match="readOnlyRootFilesystem"):
        image_checks.lockdown(_edited(staging, writable_root))
    with pytest.raises(PipelineError, match="not an emptyDir"):
        image_checks.lockdown(_edited(staging, host_path))
    with pytest.raises(PipelineError, match="0 Deployments"):
        image_checks.lockdown("kind: Service\n")


@pytest.mark.parametrize(
    ("quantity", "size"), [("256Mi", "268435456"), ("1Gi", "1073741824"), ("500M", "500000000")]
)
def test_emptydir_size_limits_become_tmpfs_sizes(quantity: str, size: str) -> None:
    assert image_checks.tmpfs_size(quantity) == size
    with pytest.raises(PipelineError, match="quantity"):
        image_checks.tmpfs_size("1.5Gi")


def test_layer_sizes_are_read_oldest_first_without_empty_layers() -> None:
    layers = [  # as podman prints them: newest first
        {"size": 2048, "CreatedBy": "COPY --chown=bentoml:bentoml /home/bentoml/bento /b"},
        {"size": 0, "CreatedBy": "/bin/sh -c #(nop) ENV PATH=/app/.venv/bin:$PATH"},
        {"size": 300_000_000, "CreatedBy": "COPY /app /app"},
        {"size": 150_000_000, "CreatedBy": "/bin/sh -c #(nop) ADD file:abc in /"},
    ]
    history = "WARN[0000] a warning podman printed\n" + json.dumps(layers)
    assert image_checks.layer_sizes(history) == [
        (150_000_000, "ADD file:abc in /"),
        (300_000_000, "COPY /app /app"),
        (2048, "COPY --chown=bentoml:bentoml /home/bentoml/bento /b"),
    ]
    folders = image_checks.folder_sizes(
        "110000\t/app/.venv/lib/python3.11/site-packages/scipy\n"
        "40000\t/app/.venv/lib/python3.11/site-packages/pandas\n"
    )
    assert folders == [(110000 * 1024, "scipy"), (40000 * 1024, "pandas")]
    lines = image_checks.size_lines(image_checks.layer_sizes(history), folders)
    assert lines[0].split() == ["150.0", "MB", "ADD", "file:abc", "in", "/"]
    assert lines[-1] == "largest in its Python environment (MB): scipy 113, pandas 41"
