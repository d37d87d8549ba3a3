"""`make dvc-pull` and `make dvc-push`: main's pipeline outputs, shared through the DVC remote.

A release pushes the data and the outputs of the stages that the committed ``dvc.lock`` names,
once ``make check-lock`` has proved they are what the code reproduces. Every later job (the
release's image job, a pull request's gate, the next release) pulls them first, so ``dvc repro``
runs only the stages whose inputs changed instead of training main's model again. The outputs
that name an MLflow run (the stages :data:`pipelines.release.lockcheck.IGNORED` leaves out) are
not pushed: each job that needs them registers its own run.

Without a default remote both say so in one line and change nothing. A pull that cannot read the
remote (no keys on a pull request, say) warns and leaves the stages to reproduce; a push that
fails stops the job, since a release that was meant to share its outputs did not.

Usage: ``python -m pipelines.release.outputs pull|push``
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipelines.core.io import PipelineError, run_stage
from pipelines.params import load_paths
from pipelines.release.lockcheck import IGNORED
from pipelines.stages.data import STORAGE_SUPPORT

if TYPE_CHECKING:
    from dvc.repo import Repo

NAMING_A_RUN = frozenset(stage for stage, _ in IGNORED)
NO_REMOTE = "no default DVC remote (docs/dvc-remote.md)"


def default_remote(repo: Repo) -> str | None:
    """The name of the repository's default DVC remote, or None when none is set."""
    name = repo.config.get("core", {}).get("remote")
    return str(name) if name else None


def shared_targets(repo: Repo, data_dvc: str) -> list[str]:
    """What a release shares: the data's .dvc file and every stage but those naming a run."""
    names = (getattr(stage, "name", None) for stage in repo.index.stages)  # .dvc files: none
    return [data_dvc, *sorted(n for n in names if n and n not in NAMING_A_RUN)]


def pull() -> int:
    """Restore what the remote holds of the outputs ``dvc.lock`` names; never fails the job."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo() as repo:
        remote = default_remote(repo)
        if remote is None:
            print(f"{NO_REMOTE}: nothing to pull, `dvc repro` runs every stage it needs")
            return 0
        try:
            stats = repo.pull(allow_missing=True)
        # OSError: a folder that is a file; ImportError: the storage's DVC plugin is missing
        except (DvcException, OSError, ImportError) as error:
            reason = " ".join(str(error).split())
            hint = f"; install {STORAGE_SUPPORT}" if isinstance(error, ImportError) else ""
            print(
                f"could not pull from DVC remote '{remote}' ({reason}{hint}): `dvc repro` runs "
                "the stages whose outputs are missing",
                file=sys.stderr,
            )
            return 0
    restored = len(stats.get("added", [])) + len(stats.get("modified", []))
    print(
        f"pulled from DVC remote '{remote}': {stats.get('fetched', 0)} files fetched, "
        f"{restored} outputs restored (`dvc repro` runs only what changed or is missing)"
    )
    return 0


def push() -> int:
    """Push the data and main's outputs to the default remote, when one is set.

    Raises:
        PipelineError: the remote is set but the push failed.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    paths = load_paths()
    with Repo() as repo:
        remote = default_remote(repo)
        if remote is None:
            print(f"{NO_REMOTE}: nothing pushed, the next job reproduces main's outputs itself")
            return 0
        targets = shared_targets(repo, str(paths.data_dvc))
        try:
            pushed = repo.push(targets=targets)
        except ImportError as error:
            raise PipelineError(
                f"could not push to DVC remote '{remote}': {error}\n  - Install {STORAGE_SUPPORT}."
            ) from error
        except (DvcException, OSError) as error:
            reason = " ".join(str(error).split())
            raise PipelineError(
                f"could not push to DVC remote '{remote}': {reason}\n"
                "  - Check its keys (the secrets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
                "the workflows, docs/shared-services.md) and that the storage is reachable."
            ) from error
    print(
        f"pushed to DVC remote '{remote}': {pushed} new files ({', '.join(targets)}); "
        f"not shared: {', '.join(sorted(NAMING_A_RUN))} (they name a job's own MLflow run)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Pull or push the shared outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pull", "push"))
    args = parser.parse_args(argv)
    return pull() if args.action == "pull" else push()


if __name__ == "__main__":
    run_stage(main)
