"""Stage plumbing: atomic writes (old output or new, never half), path arguments, clean errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.core.io import (
    PipelineError,
    atomic_path,
    path_arguments,
    run_stage,
    write_atomically,
    write_json,
)


class CrashError(Exception):
    """Stands for anything going wrong halfway through a write."""


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def crash_while_writing(
    target: Path, write: Callable[[Path], None], error: type[BaseException] = CrashError
) -> None:
    """Write the new output into the temporary path, then fail before the block ends."""
    with atomic_path(target) as partial:
        write(partial)
        raise error


def contents(path: Path) -> bytes | dict[str, bytes | None]:
    """A file's bytes, or a directory's snapshot."""
    return snapshot(path) if path.is_dir() else path.read_bytes()


def make_file(path: Path) -> None:
    path.write_text("old contents\n")


def make_dir(path: Path) -> None:
    path.mkdir()
    (path / "model.ubj").write_bytes(b"\x00old model")
    (path / "sub").mkdir()
    (path / "sub" / "meta.json").write_text('{"old": true}\n')


def write_file(partial: Path) -> None:
    partial.write_text("new contents\n")


def write_dir(partial: Path) -> None:
    partial.mkdir()
    (partial / "model.skops").write_bytes(b"new model")


KINDS = [
    pytest.param(make_file, write_file, id="file"),
    pytest.param(make_dir, write_dir, id="directory"),
]


@pytest.mark.parametrize(("make", "write"), KINDS)
@pytest.mark.parametrize("existing", [True, False], ids=["replaces", "creates"])
def test_success_puts_the_new_output_in_place(
    tmp_path: Path, make: Callable, write: Callable, existing: bool
) -> None:
    target = tmp_path / "out" / "deeper" / "target"
    expected = tmp_path / "expected"
    write(expected)
    if existing:
        target.parent.mkdir(parents=True)
        make(target)

    with atomic_path(target) as partial:
        assert partial.parent == target.parent
        assert partial != target
        assert not partial.exists()
        write(partial)

    assert target.is_dir() == expected.is_dir()
    assert contents(target) == contents(expected)
    assert [p.name for p in target.parent.iterdir()] == ["target"]  # no .partial leftover


@pytest.mark.parametrize(("make", "write"), KINDS)
@pytest.mark.parametrize("error", [CrashError, KeyboardInterrupt])
def test_failure_leaves_the_previous_output_untouched(
    tmp_path: Path, make: Callable, write: Callable, error: type[BaseException]
) -> None:
    target = tmp_path / "target"
    make(target)
    before = snapshot(tmp_path)

    with pytest.raises(error):
        crash_while_writing(target, write, error)

    assert snapshot(tmp_path) == before
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(("make", "write"), KINDS)
def test_failure_without_previous_output_leaves_nothing(
    tmp_path: Path, make: Callable, write: Callable
) -> None:
    with pytest.raises(CrashError):
        crash_while_writing(tmp_path / "target", write)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stale", [make_file, make_dir], ids=["file", "directory"])
def test_leftover_from_an_earlier_crash_is_cleared(tmp_path: Path, stale: Callable) -> None:
    stale(tmp_path / ".target.partial")

    with atomic_path(tmp_path / "target") as partial:
        assert not partial.exists()
        write_file(partial)

    assert [p.name for p in tmp_path.iterdir()] == ["target"]
    assert (tmp_path / "target").read_text() == "new contents\n"


def test_write_atomically(tmp_path: Path) -> None:
    target = tmp_path / "predictions.csv"
    make_file(target)

    write_atomically(target, lambda p: p.write_text("id,probability\n1,0.5\n"))

    assert target.read_text() == "id,probability\n1,0.5\n"


def test_write_atomically_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "predictions.csv"
    make_file(target)

    def half_write(partial: Path) -> None:
        partial.write_text("id,probab")
        raise CrashError

    with pytest.raises(CrashError):
        write_atomically(target, half_write)

    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_write_json(tmp_path: Path) -> None:
    target = tmp_path / "eval" / "metrics.json"
    document = {"roc_auc": 0.84, "rows": 1409, "segments": {"b": None, "a": [1, 2]}}

    write_json(target, document)

    text = target.read_text()
    assert json.loads(text) == document
    assert text.endswith("}\n")
    assert '\n  "rows": 1409' in text  # indented, one key a line, so diffs read well
    assert list(json.loads(text)) == ["roc_auc", "rows", "segments"]  # order kept


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_write_json_rejects_non_json_numbers(tmp_path: Path, bad: float) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"roc_auc": 0.8})
    before = target.read_bytes()

    with pytest.raises(ValueError, match="JSON compliant"):
        write_json(target, {"roc_auc": bad})

    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_path_arguments_are_required_paths() -> None:
    args = path_arguments("stage", ("raw", "data-dvc"), ["--raw", "a.csv", "--data-dvc", "d.dvc"])
    assert args.raw == Path("a.csv")
    assert args.data_dvc == Path("d.dvc")
    with pytest.raises(SystemExit):
        path_arguments("stage", ("raw", "out"), ["--raw", "a.csv"])


def _raises(error: Exception) -> Callable[[], int]:
    def main() -> int:
        raise error

    return main


@pytest.mark.parametrize(
    ("main", "code", "message"),
    [
        (lambda: 0, 0, ""),
        (lambda: 3, 3, ""),
        (_raises(PipelineError("train.seed: bad")), 1, "error: train.seed: bad\n"),
        (
            _raises(FileNotFoundError(2, "No such file", "x.csv")),
            1,
            "error: x.csv does not exist: run `make data` for the raw table, or `dvc repro` to "
            "build the outputs of earlier stages\n",
        ),
    ],
    ids=["ok", "code", "user-error", "missing-file"],
)
def test_run_stage_exits_with_the_code_and_one_readable_line(
    main: Callable[[], int], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    assert exited.value.code == code
    # Exactly the one line (or nothing on success): no traceback, no second line, no stdout.
    assert capsys.readouterr() == ("", message)


def test_run_stage_lets_bugs_through() -> None:
    with pytest.raises(KeyError):
        run_stage(_raises(KeyError("a bug, not a user error")))
