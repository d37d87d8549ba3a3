"""Restoring the raw table with DVC when the remote's storage needs a plugin that is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.stages.data import restore_with_dvc
from tools.scratch import BIN


def dvc(folder: Path, *args: str) -> None:
    subprocess.run([str(BIN / "dvc"), *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture
def tracked(tmp_path: Path) -> Path:
    """A DVC repository whose data is tracked and neither in the workspace nor the cache."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.csv").write_text("a,b\n1,2\n")
    dvc(tmp_path, "add", "-q", "data")
    for gone in ("data", ".dvc/cache"):
        subprocess.run(["rm", "-rf", str(tmp_path / gone)], check=True)
    return tmp_path


def test_an_s3_remote_without_its_dvc_plugin_is_an_error_that_says_what_to_install(
    tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc(tracked, "remote", "add", "-d", "team", "s3://bucket/dvc")
    monkeypatch.chdir(tracked)
    monkeypatch.setitem(sys.modules, "dvc_s3", None)  # as if dvc-s3 were not installed
    with pytest.raises(PipelineError) as raised:
        restore_with_dvc(Path("data.dvc"))
    said = str(raised.value)
    assert "remote 'team'" in said
    assert "dvc-s3" in said
    assert "`make install`" in said
    assert "uv add dvc-gs" in said  # and what other storage needs


def test_a_remote_that_cannot_be_reached_is_no_error_the_offline_source_follows(
    tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc(tracked, "remote", "add", "-d", "team", str(tracked / "nowhere"))
    monkeypatch.chdir(tracked)
    assert restore_with_dvc(Path("data.dvc")) is False
