"""The table a new model learns from: read it, check the arguments against it, give it an id.

Every check runs before anything is written, and each failure is one line that says what to do.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.io import PipelineError
from pipelines.schema import Schema, SchemaError, infer_schema

ROW_ID = "row_id"  # the id column added to a table that has none
MIN_ROWS = 50
MIN_PER_CLASS = 10
NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
# Target values whose positive class needs no POSITIVE= (compared lower-cased, as text)
OBVIOUS = (("yes", "no"), ("1", "0"), ("true", "false"), ("y", "n"), ("positive", "negative"))


class TableError(PipelineError):
    """An argument of ``make new-model`` does not fit the table."""


@dataclass(frozen=True)
class Table:
    """The checked table, ready to be written to ``data/``: id column included."""

    frame: pd.DataFrame
    target: str
    positive: str | int
    id: str
    id_added: bool
    schema: Schema

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.frame)


def check_name(name: str) -> str:
    """The model name, if it can name a Python project, an image and Kubernetes resources."""
    if not NAME.match(name):
        raise TableError(
            f"NAME={name!r}: use 2 to 40 lower-case letters, digits and dashes, starting with a "
            "letter and not ending with a dash (e.g. NAME=credit-risk)"
        )
    return name


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as a DataFrame.

    Raises:
        TableError: The file is missing, of another kind, unreadable or empty.
    """
    if not path.is_file():
        raise TableError(f"DATA={path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise TableError(f"DATA={path}: give a .csv or .parquet file")
    except pd.errors.EmptyDataError:
        raise TableError(f"DATA={path} is empty: give a table with a header and rows") from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TableError(f"DATA={path} cannot be read: {first}") from None
    if frame.empty:
        raise TableError(f"DATA={path} has no rows: give a table with at least {MIN_ROWS}")
    return frame


def _column(frame: pd.DataFrame, name: str, role: str) -> str:
    if name not in frame.columns:
        listed = ", ".join(repr(str(c)) for c in frame.columns)
        raise TableError(f"{role}={name!r} is not a column of the table; its columns: {listed}")
    return name


def positive_class(values: list[Any], target: str, positive: str) -> str | int:
    """The target value of the positive class: POSITIVE, or the obvious one of a yes/no pair.

    Raises:
        TableError: POSITIVE is not a value of the target, or is needed and missing.
    """
    listed = ", ".join(repr(v) for v in values)
    if positive:
        matches = [v for v in values if str(v) == positive]
        if not matches:
            raise TableError(
                f"POSITIVE={positive!r} is not a value of {target!r}: use one of {listed}"
            )
        return matches[0]  # type: ignore[no-any-return]
    texts = {str(v).lower(): v for v in values}
    for yes, no in OBVIOUS:
        if set(texts) == {yes, no}:
            return texts[yes]  # type: ignore[no-any-return]
    raise TableError(
        f"{target!r} has the values {listed}: say which is the positive class, e.g. "
        f"POSITIVE={values[0]!s}"
    )


def check_table(frame: pd.DataFrame, target: str, positive: str = "", id_column: str = "") -> Table:
    """Check TARGET, POSITIVE and ID against the table; add a row id when there is none.

    A table without an id gets ``row_id``: 1, 2, ... in the file's row order, written into the
    data itself, so an id never changes for a row once the data is versioned.

    Raises:
        TableError: Which argument does not fit, and what to give instead.
    """
    _column(frame, target, "TARGET")
    if id_column:
        _column(frame, id_column, "ID")
        if id_column == target:
            raise TableError(f"ID={id_column!r} is the target: name another column, or no ID")
        ids = frame[id_column]
        if ids.isna().any() or ids.duplicated().any():
            raise TableError(
                f"ID={id_column!r} is not a unique id: {int(ids.isna().sum())} missing and "
                f"{int(ids.duplicated(keep=False).sum())} duplicated values; leave ID out and a "
                f"{ROW_ID} column numbers the rows"
            )
        table, added = frame, False
    else:
        if ROW_ID in frame.columns:
            raise TableError(
                f"the table has a {ROW_ID!r} column but no ID was given: ID={ROW_ID} if it is "
                "the id, otherwise rename it"
            )
        table = frame.copy()
        table.insert(0, ROW_ID, range(1, len(frame) + 1))
        id_column, added = ROW_ID, True

    labels = frame[target]
    if labels.isna().any():
        raise TableError(
            f"{int(labels.isna().sum())} rows have no {target!r}: drop them from the table first"
        )
    values = sorted(labels.unique().tolist(), key=str)
    if len(values) != 2:
        shown = ", ".join(repr(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise TableError(
            f"TARGET={target!r} must have exactly two values for a binary classifier; it has "
            f"{len(values)}: {shown}"
        )
    chosen = positive_class(values, target, positive)
    counts = labels.value_counts()
    if len(frame) < MIN_ROWS or counts.min() < MIN_PER_CLASS:
        per_class = ", ".join(f"{k!r}: {n}" for k, n in counts.items())
        raise TableError(
            f"the table has {len(frame)} rows ({per_class}): a model needs at least {MIN_ROWS} "
            f"rows and {MIN_PER_CLASS} of each class"
        )
    try:
        schema = infer_schema(table, target, id_column, chosen)
    except SchemaError as error:
        raise TableError(str(error)) from None
    return Table(table, target, chosen, id_column, added, schema)


def data_file(source: Path) -> str:
    """The file name the table gets in ``data/``: the source's stem, made safe, as CSV."""
    ascii_stem = unicodedata.normalize("NFKD", source.stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9_.-]+", "-", ascii_stem.lower()).strip("-.") or "table"
    return f"{stem}.csv"
