"""Fixtures of the release tests: the registry tools, and a registry on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tools import image_e2e

TOOLS = {"skopeo": "skopeo", "docker-registry": "docker-registry"}  # command -> Debian package


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
def registry(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry with no login: its address."""
    with image_e2e.local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address
