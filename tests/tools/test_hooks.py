"""The local git hooks (.pre-commit-config.yaml) on a scratch copy of the repository.

Never on the real work tree: a hook may rewrite files. Each commit hook is broken by a file made
for it, and only that hook may fail; the DVC hooks run from real git commands (push, checkout)
with pre-commit installed in the copy, against a bare origin and a local-directory DVC remote.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.scratch import BIN, ROOT, ScratchRepo

CONFIG = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
HOOKS: dict[str, dict[str, Any]] = {h["id"]: h for r in CONFIG["repos"] for h in r["hooks"]}
COMMIT_HOOKS = {
    i for i, h in HOOKS.items() if h.get("stages", CONFIG["default_stages"]) == ["pre-commit"]
}
MAX_KB = int(HOOKS["check-added-large-files"]["entry"].split("--maxkb=")[1].split()[0])

CONFLICT = "<<<<<<< ours\nleft\n=======\nright\n>>>>>>> theirs\n"
# hook id -> (file name, content) that breaks that hook and no other
BREAKS: dict[str, tuple[str, bytes]] = {
    "ruff": ("lint_error.py", b'"""A module."""\n\nimport os\n'),
    "ruff-format": ("unformatted.py", b'"""A module."""\n\nVALUE = {"a":1}\n'),
    "check-yaml": ("broken.yaml", b"key: [unclosed\n"),
    "check-json": ("broken.json", b'{"key": 1,}\n'),
    "check-added-large-files": ("large.bin", b"\0" * (MAX_KB + 1) * 1024),
    "check-merge-conflict": ("conflict.md", CONFLICT.encode()),
}


def pre_commit(repo: ScratchRepo, *args: str) -> tuple[int, str]:
    """Run the environment's pre-commit in the copy: exit code and output."""
    done = repo.run(str(BIN / "pre-commit"), *args, check=False)
    return done.returncode, done.stdout + done.stderr


def failed_hooks(output: str) -> set[str]:
    """Ids of the hooks that failed: pre-commit prints the id under a failed (or verbose) hook."""
    return set(re.findall(r"^- hook id: (\S+)", output, re.MULTILINE))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """The project, committed in a scratch git repository (no pipeline run), on a machine
    without uv: the hooks find the uv that make chooses (tools/uv), which installs its own."""
    copy = ScratchRepo.create(tmp_path_factory.mktemp("hooks"))
    copy.hide_uv(tmp_path_factory.mktemp("bin"))
    return copy


def test_every_hook_is_local_and_every_commit_hook_has_a_case() -> None:
    # local + system: pre-commit clones and installs nothing, so the hooks work offline
    assert {r["repo"] for r in CONFIG["repos"]} == {"local"}
    assert {h["language"] for h in HOOKS.values()} == {"system"}
    assert set(BREAKS) == COMMIT_HOOKS


def test_the_repository_passes_every_commit_hook(repo: ScratchRepo) -> None:
    code, output = pre_commit(repo, "run", "--all-files")
    assert code == 0, output
    assert (repo.path / ".tools/bin/uv").is_file()  # make's own, as on a machine without uv
    for hook in COMMIT_HOOKS:
        assert re.search(rf"^{re.escape(HOOKS[hook]['name'])}\.+Passed$", output, re.M), output


@pytest.mark.parametrize("hook", sorted(BREAKS))
def test_a_file_that_breaks_a_hook_fails_that_hook_only(repo: ScratchRepo, hook: str) -> None:
    name, content = BREAKS[hook]
    path = repo.path / name
    path.write_bytes(content)
    try:
        repo.run("git", "add", name)  # the large-file check looks at files being added
        code, output = pre_commit(repo, "run", "--files", name)
    finally:
        repo.run("git", "rm", "-q", "--cached", "--force", name)
        path.unlink()
    assert code == 1, output
    assert failed_hooks(output) == {hook}, output
    assert re.search(rf"^{re.escape(HOOKS[hook]['name'])}\.+Failed$", output, re.M), output
    assert name in output  # the hook says which file


def test_dvc_hooks_push_to_a_remote_and_check_out_on_switch(
    repo: ScratchRepo, tmp_path: Path
) -> None:
    hooked = repo.copy(tmp_path / "hooked")
    code, output = pre_commit(hooked, "install")
    assert code == 0, output
    hooked.run("git", "init", "-q", "--bare", str(tmp_path / "origin.git"))
    hooked.run("git", "remote", "add", "origin", str(tmp_path / "origin.git"))

    # No default DVC remote (the offline default): the push goes through, and says why
    # (committed: pre-commit stashes unstaged changes while hooks run; a generated repository
    # has a default remote)
    hooked.dvc("remote", "default", "--unset")
    hooked.run("git", "commit", "-q", "--allow-empty", "-m", "no DVC remote", ".dvc/config")
    pushed = hooked.run("git", "push", "-q", "origin", "HEAD:main", check=False)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "no default DVC remote: nothing to push" in pushed.stdout + pushed.stderr

    # A DVC-tracked file, then a local-directory remote: the push puts its object there
    (hooked.path / "probe.txt").write_text("first\n")
    hooked.dvc("add", "-q", "probe.txt")
    hooked.run("git", "add", "probe.txt.dvc", ".gitignore")
    hooked.run("git", "commit", "-qm", "probe")
    store = tmp_path / "dvc-remote"
    # in .dvc/config.local, which git ignores (and pre-commit does not stash)
    hooked.dvc("remote", "add", "--local", "--default", "probe", str(store))
    pushed = hooked.run("git", "push", "-q", "origin", "HEAD:main", check=False)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    digest = hashlib.md5(b"first\n", usedforsecurity=False).hexdigest()
    assert (store / "files" / "md5" / digest[:2] / digest[2:]).read_text() == "first\n"

    # A branch switch runs `dvc checkout`: the deleted output comes back from the cache. The
    # pipeline's outputs, missing from a scratch copy's cache, are reported and do not fail the
    # switch: git takes the hook's exit status, and `make report` adds a worktree for a base.
    (hooked.path / "probe.txt").unlink()
    switched = hooked.run("git", "checkout", "-q", "-b", "second", check=False)
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert "not in the DVC cache: make data" in switched.stdout + switched.stderr
    assert (hooked.path / "probe.txt").read_text() == "first\n"


def test_several_yaml_documents_in_one_file_pass(repo: ScratchRepo) -> None:
    # as in a Kubernetes manifest holding several resources
    path = repo.path / "several.yaml"
    path.write_text("kind: ConfigMap\n---\nkind: Service\n")
    try:
        code, output = pre_commit(repo, "run", "check-yaml", "--files", path.name)
    finally:
        path.unlink()
    assert code == 0, output


def test_a_dvc_remote_inside_the_repository_may_hold_large_files(repo: ScratchRepo) -> None:
    name = "dvc-store/files/md5/00/large"
    path = repo.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BREAKS["check-added-large-files"][1])
    try:
        repo.run("git", "add", "--force", name)
        code, output = pre_commit(repo, "run", "check-added-large-files", "--files", name)
    finally:
        repo.run("git", "rm", "-q", "--cached", "--force", name)
        path.unlink()
    assert code == 0, output
