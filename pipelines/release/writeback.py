"""Point an overlay at a new image where Argo CD reads it: the release's GitOps write-back.

``make deploy-staging IMAGE=<repo>@sha256:<digest> [SOURCE=<commit>]`` runs in release.yml once
the image is pushed, and in staging.yml (a merge that changes ``deploy/``, or by hand). Where it
writes follows the ``targetRevision`` of the overlay's Argo CD Application
(``deploy/argocd/staging.yaml``), so the mode is said once, where Argo CD reads it:

- **A branch of its own** (``deploy/staging``, the default; any branch under ``deploy/``). The
  branch is main plus staging's image: SOURCE (the released commit) is merged into it, keeping
  the image the branch runs, and the new image is then one commit of its own. Nothing is pushed
  to main, so it works with a ruleset that requires pull requests on main; the branch only moves
  forward, one revertable commit per deploy.
- **Any other branch** (``main``; ``HEAD`` is the branch checked out). The image commit goes on
  that branch's tip and is pushed to it, for an image built from a commit on it: for
  repositories whose main takes direct pushes.

Without IMAGE, only SOURCE is merged: manifest changes merged on main reach staging. The commits
are made in a temporary worktree, so the checkout it runs from is left as it was. One write-back
runs at a time (the workflows share a concurrency group); a push that finds the branch moved by
someone else fails, and running it again starts from the new tip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.core.io import PipelineError, run_stage
from pipelines.release.manifests import (
    DEFAULT_ARGOCD,
    DEFAULT_OVERLAYS,
    current_branch,
    overlay_file,
    read_image,
    set_image,
    watched_revision,
)
from pipelines.release.reference import ImageRef, parse_reference

# Branches whose only purpose is to deploy: main is merged into them. Any other revision that
# Argo CD watches (main) takes the image commit directly, and only for an image built from it.
DEPLOY_BRANCHES = "deploy/"


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git; a failure (with ``check``) is a PipelineError quoting git's own words."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        lines = (done.stderr + done.stdout).splitlines()
        said = "\n".join(line.rstrip() for line in lines if line.strip())
        raise PipelineError(f"git {' '.join(args)} failed:\n{said}")
    return done


def deploy_message(image: ImageRef, overlay: str, source: str) -> list[str]:
    """The ``-m`` arguments of a deploy commit: what runs now, and which run built it."""
    name = image.repository.rsplit("/", 1)[-1]
    body = f"The image of {source}."
    if run := os.environ.get("GITHUB_RUN_ID"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        repository = os.environ.get("GITHUB_REPOSITORY", "")
        workflow = os.environ.get("GITHUB_WORKFLOW", "a workflow")
        body += f" Written by {workflow}: {server}/{repository}/actions/runs/{run}"
    return ["-m", f"Deploy {name}@{image.digest} to {overlay}", "-m", f"{image}\n\n{body}"]


@contextmanager
def worktree(repo: Path, start: str) -> Iterator[Path]:
    """A temporary worktree of ``repo`` at ``start`` (detached), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="writeback-") as folder:
        work = Path(folder) / "tree"
        git("worktree", "add", "-q", "--detach", str(work), start, cwd=repo)
        try:
            yield work
        finally:
            git("worktree", "remove", "--force", str(work), cwd=repo, check=False)


def remote_has(repo: Path, remote: str, branch: str) -> bool:
    """Whether ``remote`` has ``branch``; it is fetched when it has."""
    listed = git("ls-remote", "--exit-code", "--heads", remote, branch, cwd=repo, check=False)
    if listed.returncode == 2:
        return False
    if listed.returncode != 0:
        raise PipelineError(f"could not ask {remote} for {branch}: {listed.stderr.strip()}")
    git("fetch", "-q", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}", cwd=repo)
    return True


def is_ancestor(commit: str, of: str, cwd: Path) -> bool:
    """Whether ``commit`` is ``of`` or in its history."""
    return git("merge-base", "--is-ancestor", commit, of, cwd=cwd, check=False).returncode == 0


def merge_keeping_image(work: Path, path: Path, source: str, branch: str) -> None:
    """Merge ``source`` into the worktree's HEAD, keeping the image the branch runs.

    Where both sides changed the same lines, ``source`` wins (the branch's own commits change
    the image only); the image is then put back, so merges never move what runs.
    """
    kept = read_image((work / path).read_text(encoding="utf-8"))
    merged = git("merge", "--no-ff", "--no-commit", "-X", "theirs", source, cwd=work, check=False)
    if merged.returncode != 0:
        conflicts = git("diff", "--name-only", "--diff-filter=U", cwd=work).stdout.split()
        raise PipelineError(
            f"merging {source[:12]} into {branch} conflicts in {', '.join(conflicts) or '?'}: "
            f"merge it by hand (git switch {branch} && git merge {source[:12]}), push it, and "
            "run this again"
        )
    set_image(work / path, kept)
    git("add", "--", str(path), cwd=work)
    git("commit", "-q", "-m", f"Merge {source[:12]} into {branch}", cwd=work)


def write_back(
    repo: Path,
    overlay: str,
    image: ImageRef | None,
    source: str,
    *,
    overlays: Path = DEFAULT_OVERLAYS,
    argocd: Path = DEFAULT_ARGOCD,
    remote: str = "origin",
) -> str:
    """Make ``overlay`` run ``image`` on the branch Argo CD watches; return what was done.

    Args:
        repo: the repository's checkout (paths below are relative to it).
        overlay: the overlay, e.g. ``staging``.
        image: the image by digest, or None to merge ``source`` only.
        source: the commit the image was built from (merged into a deploy branch).
        overlays: the overlays' folder.
        argocd: the Argo CD Applications' folder.
        remote: where the branch is pushed.

    Raises:
        PipelineError: the push was refused (e.g. a protected branch), the merge conflicts, or
            ``source`` is not on the watched branch that is checked out.
    """
    path = overlay_file(repo / overlays, overlay).relative_to(repo)
    revision = watched_revision(repo / argocd, overlay)
    direct = not revision.startswith(DEPLOY_BRANCHES)
    branch = current_branch(repo) if revision == "HEAD" else revision
    if branch is None:
        raise PipelineError(
            f"Argo CD deploys {overlay} from HEAD and no branch is checked out: name the branch "
            f"in its Application's targetRevision"
        )
    source = git("rev-parse", "--verify", f"{source}^{{commit}}", cwd=repo).stdout.strip()
    exists = remote_has(repo, remote, branch)
    tip = f"{remote}/{branch}"
    if direct and not (exists and is_ancestor(source, tip, repo)):
        raise PipelineError(
            f"{source[:12]} is not on {tip}: Argo CD deploys {overlay} from {branch} itself, "
            f"so only an image built from {branch} goes there"
        )
    with worktree(repo, tip if exists else source) as work:
        if exists and not direct and not is_ancestor(source, "HEAD", work):
            merge_keeping_image(work, path, source, branch)
        if image is not None and set_image(work / path, image):
            git("commit", "-q", *deploy_message(image, overlay, source), "--", str(path), cwd=work)
        head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        runs = read_image((work / path).read_text(encoding="utf-8"))
        if exists and head == git("rev-parse", tip, cwd=repo).stdout.strip():
            return f"{overlay} already runs {runs} ({branch} at {head[:12]}): nothing to push"
        pushed = git("push", "-q", remote, f"HEAD:refs/heads/{branch}", cwd=work, check=False)
    if pushed.returncode != 0:
        said = "\n".join(line.rstrip() for line in pushed.stderr.splitlines() if line.strip())
        hint = (
            f"a {branch} that takes no direct push needs the release to write elsewhere: let "
            f"Argo CD deploy {overlay} from a branch of its own (targetRevision: "
            f"deploy/{overlay} in {argocd}/, the template's default)"
            if direct
            else f"{branch} must take pushes from this token (no pull-request rule on it), and "
            "only move forward: if someone pushed to it meanwhile, run this again"
        )
        raise PipelineError(f"{remote} refused the push to {branch}:\n{said}\n{hint}")
    return f"{overlay} runs {runs}: {branch} {'pushed' if exists else 'created'} at {head[:12]}"


def main(argv: list[str] | None = None) -> int:
    """Write an image into the overlay Argo CD deploys, on the branch it watches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", default="staging", help="the overlay (default: staging)")
    parser.add_argument("--image", default="", help="REPOSITORY@sha256:<64 hex>; none: merge only")
    parser.add_argument("--source", default="HEAD", help="the commit the image was built from")
    parser.add_argument("--remote", default="origin", help="where to push (default: origin)")
    args = parser.parse_args(argv)
    image = parse_reference(args.image) if args.image else None
    print(write_back(Path.cwd(), args.overlay, image, args.source, remote=args.remote))
    return 0


if __name__ == "__main__":
    run_stage(main)
