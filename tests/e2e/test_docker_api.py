"""Podman's Docker-compatible API for docker clients (`podman_docker_api`), for real.

The act release scenario and `make image-e2e BACKEND=docker` build through it: docker clients
must reach it on its socket, see Podman (so `make image` builds without BuildKit), and find the
images of the run's buildah store; it must be gone, socket and process, after the block.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.release.image import docker_build_env, push_image, write_sbom
from pipelines.release.registry import registry_digest
from pipelines.release.reports import ImageReport
from tools import containers

pytestmark = pytest.mark.slow  # a podman service and an image commit, a few seconds

NEEDED = {"podman": "podman", "buildah": "buildah", "runc": "runc", "docker": None}


@pytest.fixture(scope="module")
def podman() -> None:
    """podman, buildah and runc (apt as root) and the docker CLI; CI fails without them."""
    missing = sorted({p for c, p in NEEDED.items() if p and shutil.which(c) is None})
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q"]
        subprocess.run([*apt, "update"], env=env, capture_output=True, check=False)
        subprocess.run([*apt, "install", "-y", *missing], env=env, capture_output=True, check=False)
    absent = sorted(c for c in NEEDED if shutil.which(c) is None)
    if absent:
        message = f"{', '.join(absent)} not installed (podman, buildah, runc: apt-get install)"
        if os.environ.get("CI") and absent != ["docker"]:
            pytest.fail(message)
        pytest.skip(message)


def test_docker_clients_reach_podman_on_the_runs_store(
    podman: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = containers.prepare(tmp_path, Path.cwd())
    container = run.run("buildah", "from", "scratch").strip()
    run.run("buildah", "commit", "--quiet", container, "localhost/empty:v1")
    run.run("buildah", "rm", container)
    try:
        with containers.podman_docker_api(run) as docker:
            sock = Path(docker["DOCKER_HOST"].removeprefix("unix://"))
            assert containers.docker_api_answers(sock)
            images = subprocess.run(
                ["docker", "image", "ls", "--format", "{{json .}}"],
                env={**os.environ, **docker},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "localhost/empty" in [
                json.loads(line)["Repository"] for line in images.splitlines()
            ]
            for name, value in docker.items():
                monkeypatch.setenv(name, value)
            monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
            assert docker_build_env() == {"DOCKER_BUILDKIT": "0"}
            monkeypatch.setenv("DOCKER_BUILDKIT", "1")
            assert docker_build_env() == {}  # the caller's choice stands
        assert not sock.exists()
        assert not containers.docker_api_answers(sock)
    finally:
        containers.unmount_under(tmp_path)


def test_a_buildah_image_is_pushed_by_digest_and_scanned_from_the_registry(
    podman: None, image_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buildah backend's own steps (push with its digest file, SBOM by digest), on a small
    image: `make image-e2e` runs them on the bento's image."""
    run = containers.prepare(tmp_path, Path.cwd())
    for name in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "TMPDIR"):
        monkeypatch.setenv(name, run.env[name])
    image = f"{image_registry}/tiny/model:v1-0123456789ab"
    (tmp_path / "hello.txt").write_text("hello\n")
    container = run.run("buildah", "from", "scratch").strip()
    run.run("buildah", "copy", container, str(tmp_path / "hello.txt"), "/hello.txt")
    run.run("buildah", "commit", "--quiet", container, image)
    run.run("buildah", "rm", container)
    try:
        report = tmp_path / "image.json"
        report.write_text(
            ImageReport(image=image, bento="m:v1", backend="buildah").model_dump_json()
        )
        pushed = push_image(report)
        assert pushed.digest_ref == f"{image_registry}/tiny/model@{registry_digest(image)}"
        source = write_sbom(report, tmp_path / "sbom.json")
        assert source == f"registry:{pushed.digest_ref}"
        assert json.loads((tmp_path / "sbom.json").read_text())["spdxVersion"].startswith("SPDX-")
    finally:
        containers.unmount_under(tmp_path)
