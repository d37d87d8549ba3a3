"""`make dvc-pull` and `make dvc-push`: what a release shares through the DVC remote.

Pushing to and pulling from a real S3 remote, and a fresh runner that then trains nothing, is
the act scenario in tests/e2e/test_act.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.params import load_paths
from pipelines.release.lockcheck import IGNORED
from pipelines.release.outputs import NAMING_A_RUN, shared_targets
from tools.scratch import ROOT, ScratchRepo


def files(root: Path) -> list[Path]:
    """Every file and folder but git's, DVC's scratch space (.dvc/tmp) and Python's bytecode."""
    found = (p.relative_to(root) for p in root.rglob("*"))
    return sorted(
        p
        for p in found
        if ".git" not in p.parts and "__pycache__" not in p.parts and p.parts[:2] != (".dvc", "tmp")
    )


def test_a_release_shares_the_data_and_every_stage_but_those_naming_a_run() -> None:
    from dvc.repo import Repo

    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    # The stages check-lock ignores are the ones not shared, and dvc.yaml still has them
    assert {stage for stage, _ in IGNORED} == NAMING_A_RUN
    assert set(stages) >= NAMING_A_RUN
    data_dvc = str(load_paths(ROOT / "params.yaml").data_dvc)
    with Repo(str(ROOT)) as repo:
        targets = shared_targets(repo, data_dvc)
    assert targets == [data_dvc, *sorted(set(stages) - NAMING_A_RUN)]


def test_without_a_remote_both_say_so_and_change_nothing(tmp_path: Path) -> None:
    repo = ScratchRepo.create(tmp_path / "repo")
    repo.dvc("remote", "default", "--unset")  # a new model's repository commits one
    before = files(repo.path)
    pulled = repo.python("-m", "pipelines.release.outputs", "pull")
    assert pulled.stdout.strip() == (
        "no default DVC remote (docs/dvc-remote.md): nothing to pull, "
        "`dvc repro` runs every stage it needs"
    )
    pushed = repo.python("-m", "pipelines.release.outputs", "push")
    assert pushed.stdout.strip() == (
        "no default DVC remote (docs/dvc-remote.md): nothing pushed, "
        "the next job reproduces main's outputs itself"
    )
    assert files(repo.path) == before


def test_a_pull_that_cannot_read_the_remote_warns_and_a_push_that_fails_stops(
    tmp_path: Path,
) -> None:
    """A directory remote that is a file: neither can use it. A pull request's job goes on and
    reproduces; a release that was meant to share its outputs fails saying why."""
    repo = ScratchRepo.create(tmp_path / "repo")
    repo.python("-m", "pipelines.stages.data")  # the data in the local cache, to push
    (tmp_path / "not-a-folder").write_text("a file where the remote should be\n")
    repo.dvc("remote", "add", "-d", "store", str(tmp_path / "not-a-folder"))
    pulled = repo.python("-m", "pipelines.release.outputs", "pull", check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "could not pull from DVC remote 'store'" in pulled.stderr, pulled.stderr
    pushed = repo.python("-m", "pipelines.release.outputs", "push", check=False)
    assert pushed.returncode != 0
    assert "could not push to DVC remote 'store'" in pushed.stderr, pushed.stderr
    assert "AWS_ACCESS_KEY_ID" in pushed.stderr
