"""The table a new model learns from: read it, check the arguments against it, give it an id.

Every check runs before anything is written, and each failure is one line that says what to do.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.io import PipelineError
from pipelines.core.metrics import TASKS, Task
from pipelines.schema import MAX_CLASSES, Schema, SchemaError, infer_schema, infer_task

ROW_ID = "row_id"  # the id column added to a table that has none
MIN_ROWS = 50
MIN_PER_CLASS = 10
MIN_ROWS_PER_CLASS = 30  # on average: fewer, and the test rows hold a handful of each class
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
    positive: str | int | None
    id: str
    id_added: bool
    schema: Schema
    task: Task = "binary"
    reason: str = ""  # why the task is what it is: inferred from the target, or TASK= given

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


def check_table(
    frame: pd.DataFrame,
    target: str,
    positive: str = "",
    id_column: str = "",
    task: str = "",
    *,
    audit: tuple[str, ...] = (),
) -> Table:
    """Check TARGET, POSITIVE, ID, TASK and AUDIT against the table; add a row id if it has none.

    AUDIT's columns go under the schema's ``audit:``: validated, never features.

    A table without an id gets ``row_id``: 1, 2, ... in the file's row order, written into the
    data itself, so an id never changes for a row once the data is versioned. The task is
    TASK, or inferred from the target (:func:`pipelines.schema.infer_task`), and checked.

    Raises:
        TableError: Which argument does not fit, and what to give instead.
    """
    _column(frame, target, "TARGET")
    table, id_column, added = with_id(frame, id_column, target)
    for name in audit:
        _column(frame, name, "AUDIT")
        if name in (target, id_column):
            raise TableError(f"AUDIT={name!r} is the target or the id: name another column")

    labels = frame[target]
    if labels.isna().any():
        raise TableError(
            f"{int(labels.isna().sum())} rows have no {target!r}: drop them from the table first"
        )
    if len(frame) < MIN_ROWS:
        raise TableError(f"the table has {len(frame)} rows: a model needs at least {MIN_ROWS}")
    if labels.nunique() < 2:
        raise TableError(f"TARGET={target!r} is constant ({labels.iloc[0]!r}): nothing to learn")
    chosen_task, reason = choose_task(labels, task)
    if positive and chosen_task != "binary":
        raise TableError(f"POSITIVE={positive!r} is for a binary target; this one is {chosen_task}")
    chosen = None
    if chosen_task == "regression":
        check_regression(labels)
    else:
        values = sorted(labels.unique().tolist(), key=str)
        check_classes(labels, chosen_task, values)
        if chosen_task == "binary":
            chosen = positive_class(values, target, positive)
    try:
        schema = infer_schema(table, target, id_column, chosen, chosen_task, audit=audit)
    except SchemaError as error:
        raise TableError(str(error)) from None
    return Table(table, target, chosen, id_column, added, schema, chosen_task, reason)


def with_id(frame: pd.DataFrame, id_column: str, target: str) -> tuple[pd.DataFrame, str, bool]:
    """The table with its id column (ID, or a new ``row_id``), the id's name, whether added.

    Raises:
        TableError: ID is missing, the target, or not unique; or ``row_id`` is taken.
    """
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
    return table, id_column, added


def choose_task(labels: pd.Series, task: str) -> tuple[Task, str]:
    """TASK, or the task inferred from the target, and why (one line for the user).

    Raises:
        TableError: TASK is not a task.
    """
    inferred, why = infer_task(labels)
    if not task:
        return inferred, f"inferred: {why}; TASK=binary|multiclass|regression overrides it"
    if task not in TASKS:
        raise TableError(f"TASK={task!r}: use one of {', '.join(TASKS)} (or leave it out)")
    said = "as inferred" if task == inferred else f"inferred would be {inferred}"
    return task, f"TASK={task} ({said}: {why})"  # type: ignore[return-value]


def check_classes(labels: pd.Series, task: Task, values: list[Any]) -> None:
    """A classifier's target: two classes (binary) or 3 to MAX_CLASSES, each with enough rows.

    Raises:
        TableError: The count of classes does not fit the task, or a class has too few rows.
    """
    target = labels.name
    shown = ", ".join(repr(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
    if task == "binary" and len(values) != 2:
        raise TableError(
            f"TARGET={target!r} must have exactly two values for a binary classifier; it has "
            f"{len(values)}: {shown}"
            + ("" if len(values) < 2 else " (leave TASK out, or TASK=multiclass)")
        )
    if task == "multiclass" and len(values) < 3:
        raise TableError(
            f"TARGET={target!r} has {len(values)} values ({shown}): a multiclass model needs 3 "
            "or more; use TASK=binary"
        )
    if len(values) > MAX_CLASSES:
        raise TableError(
            f"TARGET={target!r} has {len(values)} classes, more than {MAX_CLASSES}: group the "
            "rare ones first, or use TASK=regression if it is a number"
        )
    counts = labels.value_counts()
    small = counts[counts < MIN_PER_CLASS]
    if len(small):
        named = ", ".join(f"{k!r} ({n} rows)" for k, n in small.items())
        raise TableError(
            f"a class of {target!r} has fewer than {MIN_PER_CLASS} rows: {named}; each class "
            "needs some in the training and the test rows: drop or merge it first"
        )
    if task == "multiclass" and len(labels) < MIN_ROWS_PER_CLASS * len(values):
        raise TableError(
            f"too few rows per class: {len(labels)} rows for {len(values)} classes of "
            f"{target!r}; a multiclass model needs {MIN_ROWS_PER_CLASS} per class on average"
        )


def check_regression(labels: pd.Series) -> None:
    """A regression's target: finite numbers.

    Raises:
        TableError: The target is not numeric or holds infinities.
    """
    target = labels.name
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        raise TableError(
            f"TARGET={target!r} is not numeric ({labels.dtype}): a regression needs numbers; "
            "leave TASK out for a classifier"
        )
    infinite = int((~np.isfinite(labels.to_numpy(dtype=np.float64))).sum())
    if infinite:
        raise TableError(f"{infinite} values of {target!r} are infinite: fix or drop those rows")


def data_file(source: Path) -> str:
    """The file name the table gets in ``data/``: the source's stem, made safe, as CSV."""
    ascii_stem = unicodedata.normalize("NFKD", source.stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9_.-]+", "-", ascii_stem.lower()).strip("-.") or "table"
    return f"{stem}.csv"
