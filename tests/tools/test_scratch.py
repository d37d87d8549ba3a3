"""Scratch copies are isolated from the user's settings and never change the running environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tools.scratch import ScratchRepo, uv_cache_dir


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScratchRepo:
    """A copy made by a user whose global DVC config names a remote, and who has no uv cache."""
    real_cache = uv_cache_dir()  # before HOME moves (it is computed once)
    home = tmp_path / "home"
    (home / ".config" / "dvc").mkdir(parents=True)
    (home / ".config" / "dvc" / "config").write_text(
        "[core]\n    remote = leaked\n['remote \"leaked\"']\n    url = /nowhere\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    copy = tmp_path / "copy"
    copy.mkdir()
    created = ScratchRepo.create(copy)
    assert uv_cache_dir() == real_cache
    return created


def test_the_users_dvc_config_does_not_reach_the_copy(repo: ScratchRepo) -> None:
    assert "leaked" not in repo.dvc("config", "--list").stdout
    assert "leaked" not in repo.dvc("remote", "list").stdout
    # Its own home is invisible to git: the copy stays clean.
    assert repo.run("git", "status", "--porcelain", "--untracked-files=all").stdout == ""


def test_the_copy_shares_the_real_uv_cache(repo: ScratchRepo) -> None:
    assert repo.env["HOME"] != str(Path.home())
    assert repo.run("uv", "cache", "dir").stdout.strip() == uv_cache_dir()


def test_make_install_in_the_copy_only_checks_the_running_environment(repo: ScratchRepo) -> None:
    done = repo.run("make", "install")
    # uv's dry-run summary: an exact sync of the running environment would remove what the
    # lock does not list (a developer's extra tools) from under the tests.
    assert "--check" in done.stdout
    assert "Would make no changes" in done.stderr


def test_make_uses_the_uv_on_path_and_installs_none(repo: ScratchRepo, tmp_path: Path) -> None:
    """A machine with uv on PATH: make runs that uv by name and leaves .tools/ alone."""
    real = os.environ.get("UV") or shutil.which("uv")
    assert real, "the tests run through make, which hands them its uv"
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "uv").symlink_to(real)
    repo.env.pop("UV", None)  # `uv run` tells its children where uv is; make would use it
    repo.env["PATH"] = f"{on_path}{os.pathsep}{repo.env['PATH']}"
    assert repo.run("make", "-s", "uv-path").stdout.strip() == str(on_path / "uv")
    done = repo.run("make", "install")
    assert "\nuv sync --locked" in f"\n{done.stdout}"
    assert not (repo.path / ".tools").exists()
