"""``make update-template``: bring a newer version of the template into this model repository.

``copier update`` re-renders the template version this repository was made from, takes the
repository's own changes since, and applies them onto the new version: files the template owns
are merged (a conflict is written inline, between ``<<<<<<<`` and ``>>>>>>>`` markers, and
``make check-conflicts`` fails until it is resolved); files the model owns (``_skip_if_exists``
in the template's copier.yml: params, schema, README, tests/model, overlays...) are never
written; keys a new version needs in them arrive through the template's migrations. ``uv.lock``
is not merged: it becomes the new version's, re-locked for this project (``uv lock``).

The template comes from ``_src_path`` in ``.copier-answers.yml`` (a path or a git URL; edit and
commit it when the template moves).

Usage: ``python -m pipelines.template.update [--version TAG]``, and ``... --check`` to fail while
a conflict marker is left.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import yaml

from pipelines.core.io import PipelineError, run_stage

ANSWERS = Path(".copier-answers.yml")
LOCK = "uv.lock"
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git; its stdout, or a PipelineError with its stderr."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PipelineError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def conflicted(root: Path = Path()) -> list[str]:
    """Tracked or new files that hold a conflict marker at the start of a line."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=root)
    found = []
    # A file copier left in conflict is listed once per index stage
    for name in dict.fromkeys(filter(None, listed.split("\0"))):
        path = root / name
        if not path.is_file():
            continue
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        if any(line.startswith(MARKERS) for line in lines):
            found.append(name)
    return found


def template_file(source: str, commit: str, name: str) -> bytes:
    """A file of the template at a commit (the template may be a path or a git URL)."""
    with tempfile.TemporaryDirectory() as clone:
        git("clone", "--quiet", "--no-checkout", "--filter=blob:none", source, clone)
        done = subprocess.run(
            ["git", "show", f"{commit}:{name}"], cwd=clone, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise PipelineError(f"the template at {commit} has no {name}")
        return done.stdout


def relock(source: str, commit: str) -> None:
    """The new template version's uv.lock, re-locked for this project's name and additions."""
    Path(LOCK).write_bytes(template_file(source, commit, LOCK))
    uv = os.environ.get("UV") or "uv"
    if subprocess.run([uv, "lock", "--offline", "--quiet"], check=False).returncode != 0:
        done = subprocess.run([uv, "lock", "--quiet"], check=False)
        if done.returncode != 0:
            raise PipelineError("`uv lock` failed: fix pyproject.toml, then run `uv lock`")


def main(argv: list[str] | None = None) -> int:
    """Update to the template's latest tag (or --version); re-lock; list what conflicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", default="", help="template tag or commit (default: latest tag)"
    )
    parser.add_argument("--check", action="store_true", help="only fail on conflict markers")
    args = parser.parse_args(argv)
    if args.check:
        return check()

    if not ANSWERS.is_file():
        raise PipelineError(
            f"{ANSWERS} is missing: only a repository made by `make new-model` can be updated"
        )
    if git("status", "--porcelain"):
        raise PipelineError("the working tree has changes: commit or stash them first")
    before = yaml.safe_load(ANSWERS.read_text())
    source = before["_src_path"]

    from copier import run_update
    from copier.errors import DirtyLocalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        run_update(
            ".",
            vcs_ref=args.version or None,
            defaults=True,
            overwrite=True,
            skip_answered=True,
            unsafe=True,  # the template's migrations run its own code
            conflict="inline",
            exclude=[LOCK],
            quiet=True,
        )
    after = yaml.safe_load(ANSWERS.read_text())
    relock(source, after["_commit"])
    print(f"template {before['_commit']} -> {after['_commit']} ({source})")
    changed = git("status", "--porcelain").splitlines()
    print(f"{len(changed)} files changed; review them with `git diff`, then `make test`")
    conflicts = conflicted()
    if conflicts:
        print(
            f"{len(conflicts)} with conflicts to resolve (between <<<<<<< and >>>>>>>; "
            f"`make check-conflicts` fails until they are): {', '.join(conflicts)}"
        )
    return 0


def check() -> int:
    """``make check-conflicts``: fail while a file holds a conflict marker."""
    conflicts = conflicted()
    if conflicts:
        raise PipelineError(f"unresolved conflict markers in: {', '.join(conflicts)}")
    print("no conflict markers")
    return 0


if __name__ == "__main__":
    run_stage(main)
