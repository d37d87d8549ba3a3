"""The release's write-back (`make deploy-staging`) against a real origin whose main is protected.

A bare repository stands in for GitHub: its ``pre-receive`` hook refuses every push to main, as a
ruleset that requires pull requests does (the act scenarios' origin has the same hook). Staging's
Application decides where the image goes: ``deploy/staging`` (the default) or main itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.release import manifests, writeback
from tests.support.manifests import DEPLOY, ROOT, edit
from tools.act.simulation import protect_main

OVERLAY = Path("deploy/overlays/staging/kustomization.yaml")
APPLICATION = Path("deploy/argocd/staging.yaml")
FIRST = manifests.parse_reference("registry.example/team/model@sha256:" + "1" * 64)
SECOND = manifests.parse_reference("registry.example/team/model@sha256:" + "2" * 64)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def image_at(ref: str, cwd: Path) -> str:
    return str(manifests.read_image(git("show", f"{ref}:{OVERLAY}", cwd=cwd)))


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout of main holding deploy/, and its bare origin whose main refuses pushes."""
    work = tmp_path / "work"
    shutil.copytree(DEPLOY, work / "deploy", ignore=shutil.ignore_patterns("*.jinja"))
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.name", "Release", cwd=work)
    git("config", "user.email", "release@example.com", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-qm", "The model's manifests", cwd=work)
    bare = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    git("remote", "add", "origin", str(bare), cwd=work)
    git("fetch", "-q", "origin", cwd=work)
    protect_main(bare)  # as the act scenarios' origin: a ruleset requiring pull requests
    return work, bare


def merge_to_main(work: Path, bare: Path, message: str) -> str:
    """Commit what ``work`` changed and put it on origin's main, as a merged pull request does."""
    git("commit", "-qam", message, cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    git("fetch", "-q", str(work), f"+{head}:refs/heads/main", cwd=bare)  # no hook, like GitHub
    git("fetch", "-q", "origin", cwd=work)
    return head


def test_the_template_deploys_staging_from_its_own_branch() -> None:
    assert manifests.watched_revision(DEPLOY / "argocd", "staging") == "deploy/staging"
    assert manifests.watched_revision(DEPLOY / "argocd", "production") == "main"
    with pytest.raises(PipelineError, match=r"no Argo CD Application .* deploys overlays/qa"):
        manifests.watched_revision(DEPLOY / "argocd", "qa")


def test_a_release_on_a_protected_main_writes_staging_to_its_branch_and_main_is_untouched(
    origin: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, bare = origin
    main = git("rev-parse", "main", cwd=bare)
    monkeypatch.chdir(work)
    with pytest.raises(PipelineError, match="git fetch origin deploy/staging"):
        manifests.deployed_image(Path("deploy/overlays"), Path("deploy/argocd"), "staging")

    said = writeback.write_back(work, "staging", FIRST, main)
    assert said.startswith(f"staging runs {FIRST}: deploy/staging created at ")
    assert git("rev-parse", "main", cwd=bare) == main
    # main, then one commit that changes the overlay's image and nothing else
    assert git("rev-parse", "deploy/staging~1", cwd=bare) == main
    changed = git("diff", "--name-only", main, "deploy/staging", cwd=bare)
    assert changed == str(OVERLAY)
    assert image_at("deploy/staging", bare) == str(FIRST)
    subject = git("log", "-1", "--format=%s", "deploy/staging", cwd=bare)
    assert subject == f"Deploy model@{FIRST.digest} to staging"
    assert git("status", "--porcelain", cwd=work) == ""  # the checkout is left as it was
    assert git("worktree", "list", "--porcelain", cwd=work).count("worktree ") == 1

    # What staging runs is read where Argo CD reads it (make show-image, make trace)
    git("fetch", "-q", "origin", cwd=work)
    overlays, argocd = Path("deploy/overlays"), Path("deploy/argocd")
    assert manifests.deployed_image(overlays, argocd, "staging") == FIRST
    assert manifests.deployed_image(overlays, argocd, "production") == manifests.show_image(
        Path("deploy/overlays/production/kustomization.yaml")
    )

    # The same image again: nothing to push
    tip = git("rev-parse", "deploy/staging", cwd=bare)
    again = writeback.write_back(work, "staging", FIRST, main)
    assert again.startswith(f"staging already runs {FIRST} (deploy/staging at {tip[:12]})")
    assert git("rev-parse", "deploy/staging", cwd=bare) == tip


def test_main_merges_into_staging_keeping_its_image_and_a_revert_rolls_back(
    origin: tuple[Path, Path],
) -> None:
    work, bare = origin
    writeback.write_back(work, "staging", FIRST, "main")
    # A merged pull request changes the base manifests, and (as someone ran make set-image on
    # main) the same image lines that deploy/staging changed
    edit(work / "deploy/base/deployment.yaml", "revisionHistoryLimit: 5", "revisionHistoryLimit: 3")
    manifests.set_image(work / OVERLAY, SECOND)
    merged = merge_to_main(work, bare, "Keep three old ReplicaSets")

    said = writeback.write_back(work, "staging", None, merged)  # staging.yml: merge only
    assert said.startswith(f"staging runs {FIRST}: deploy/staging pushed at ")
    parents = git("log", "-1", "--format=%P", "deploy/staging", cwd=bare).split()
    assert parents[1] == merged
    assert image_at("deploy/staging", bare) == str(FIRST)  # a merge never moves what runs
    base = git("show", "deploy/staging:deploy/base/deployment.yaml", cwd=bare)
    assert "revisionHistoryLimit: 3" in base

    # The next release: one commit on top of the merge
    writeback.write_back(work, "staging", SECOND, merged)
    assert image_at("deploy/staging", bare) == str(SECOND)
    assert git("diff", "--name-only", "deploy/staging~1", "deploy/staging", cwd=bare) == str(
        OVERLAY
    )
    # Rollback is a revert on the branch, pushed as any commit
    rollback = bare.parent / "rollback"
    git("clone", "-q", "-b", "deploy/staging", str(bare), str(rollback), cwd=bare.parent)
    git("-c", "user.name=Ops", "-c", "user.email=ops@example.com", "revert", "--no-edit", "HEAD",
        cwd=rollback)  # fmt: skip
    git("push", "-q", "origin", "HEAD:deploy/staging", cwd=rollback)
    assert image_at("deploy/staging", bare) == str(FIRST)


def test_a_direct_push_to_a_protected_main_is_refused_with_what_to_do(
    origin: tuple[Path, Path],
) -> None:
    work, bare = origin
    edit(work / APPLICATION, "targetRevision: deploy/staging", "targetRevision: main")
    merged = merge_to_main(work, bare, "Staging follows main")

    with pytest.raises(PipelineError) as refused:
        writeback.write_back(work, "staging", FIRST, merged)
    said = str(refused.value)
    assert "origin refused the push to main" in said
    assert "GH013: Repository rule violations found for refs/heads/main." in said
    assert "targetRevision: deploy/staging" in said
    assert git("rev-parse", "main", cwd=bare) == merged  # nothing lost, nothing half-written
    assert git("branch", "--list", "deploy/staging", cwd=bare) == ""

    # The same without the rule: one commit on main's tip
    (bare / "hooks" / "pre-receive").unlink()
    said = writeback.write_back(work, "staging", FIRST, merged)
    assert said.startswith(f"staging runs {FIRST}: main pushed at ")
    assert git("rev-parse", "main~1", cwd=bare) == merged
    assert git("diff", "--name-only", merged, "main", cwd=bare) == str(OVERLAY)
    # An image built from a commit that is not on main does not go there
    git("checkout", "-q", "-b", "topic", cwd=work)
    git("commit", "-q", "--allow-empty", "-m", "not merged", cwd=work)
    with pytest.raises(PipelineError, match="is not on origin/main"):
        writeback.write_back(work, "staging", SECOND, "topic")


def test_make_deploy_staging_prints_one_line_and_fails_with_one(
    origin: tuple[Path, Path],
) -> None:
    work, _ = origin
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipelines.release.writeback", "--image"]
    done = subprocess.run(
        [*command, str(FIRST)], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"staging runs {FIRST}: deploy/staging created")
    bad = subprocess.run(
        [*command, "registry.example/team/model:latest"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: image 'registry.example/team/model:latest' has no digest")
