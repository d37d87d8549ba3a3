"""What every stage's ``main()`` shares: path arguments, atomic outputs, readable errors.

DVC deletes a stage's old outputs before running it, and a crash mid-write would leave a
half-written file that looks valid. Every output is written to a temporary name beside its
destination and renamed into place, so a reader sees the old file, the new one or none.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn


class PipelineError(ValueError):
    """A problem the user can fix (params, schema, inputs): reported without a traceback."""


def path_arguments(
    description: str, names: Sequence[str], argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse the required ``--<name> PATH`` arguments that ``dvc.yaml`` passes to a stage.

    A name like ``data-dvc`` becomes the attribute ``data_dvc``.
    """
    parser = argparse.ArgumentParser(description=description)
    for name in names:
        parser.add_argument(f"--{name}", type=Path, required=True, metavar="PATH")
    return parser.parse_args(argv)


def run_stage(main: Callable[[], int]) -> NoReturn:
    """Run a stage's ``main()`` and exit with its code; user errors become one clear line."""
    try:
        code = main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except FileNotFoundError as error:
        missing = error.filename or " ".join(str(error).split())
        print(
            f"error: {missing} does not exist: run `make data` for the raw table, or "
            "`dvc repro` to build the outputs of earlier stages",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for files and directories. On an exception the temporary is removed and ``path`` is
    left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    _remove(partial)
    try:
        yield partial
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        partial.replace(path)
    finally:
        _remove(partial)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(temporary_path)`` and rename the result onto ``path``."""
    with atomic_path(path) as partial:
        write(partial)


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as stable, indented JSON (sorted keys are not imposed)."""
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda p: p.write_text(text))
