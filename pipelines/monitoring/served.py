"""Served rows and late labels, as ``make monitor`` reads them.

Served rows come from a table (``.csv``, ``.parquet``) of raw records, the raw table's feature
columns with the id, target and audit columns (schema.yaml's ``audit:``) optional and, when the
rows were already scored, the model's output under the batch scorer's names
(:mod:`pipelines.serving.batch`): ``probability`` (binary), ``probability_<class>`` per class
(multiclass), ``prediction`` and optionally ``low`` and ``high`` (regression). Or they come
from the service's request log (``.jsonl``: one JSON object per record, the raw feature values
under ``record``, ``id`` and the record's ``/predict`` fields beside it: ``probability``;
``probabilities`` by class; ``prediction`` and ``interval``).
A folder stands for every such file in it, sorted by path.

Late labels are a CSV with the columns ``id,label``, one label per id, in the data's own terms:
a binary target's two values, a multiclass target's classes, a regression's numbers.

Everything is read column-wise (pandas, or Arrow's JSON reader for the log): a million rows take
seconds, and no Python runs per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.io import PipelineError
from pipelines.core.metrics import PROBABILITY as PROBABILITY_OF
from pipelines.schema import Schema, Target
from pipelines.serving.batch import HIGH, LOW, PREDICTION, PROBABILITY

SUFFIXES = (".csv", ".parquet", ".jsonl")
LOG_ID = "id"  # of a request-log line, and the id column of a labels file
LABELS_COLUMNS = ("id", "label")
MAX_EXAMPLES = 5
# The request log's prediction fields that are not the batch scorer's column names
PROBABILITIES, INTERVAL = "probabilities", "interval"


class MonitorError(PipelineError):
    """Served rows or labels that cannot be compared with the reference (exit 2)."""


@dataclass(frozen=True)
class Served:
    """Served rows, in file order.

    Attributes:
        frame: The raw feature columns, and the audit columns the rows carry (others are
            dropped).
        ids: Each row's id as text (None where a row has none), for joining late labels.
        output: What the model gave each row (:func:`pipelines.core.model.predict`): a binary
            model's probability, a multiclass model's probability per class (rows x classes,
            in the schema's class order) or a regression's prediction; NaN where the rows
            carried none.
        interval: A regression's served interval, rows x (low, high); NaN where the rows
            carried none. None for a classifier.
        files: The files read.
    """

    frame: pd.DataFrame
    ids: np.ndarray
    output: np.ndarray
    interval: np.ndarray | None
    files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def unscored(self) -> np.ndarray:
        """Rows without a served output: the current model scores them."""
        missing = np.isnan(self.output)
        return missing.any(axis=1) if missing.ndim == 2 else missing


def output_columns(target: Target) -> list[str]:
    """The columns of a table that hold the model's output, as the batch scorer names them."""
    if target.task == "multiclass":
        return [f"{PROBABILITY_OF}{c}" for c in target.labels]
    return [PREDICTION if target.task == "regression" else PROBABILITY]


def files_of(path: Path) -> list[Path]:
    """The files ``path`` stands for: itself, or every table and log file under a folder.

    Raises:
        MonitorError: Nothing there, or a file of another kind.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise MonitorError(
                f"{path} holds no {', '.join(SUFFIXES)} files: give ROWS=<file or folder> of "
                "served rows (e.g. the service's request log folder)"
            )
        return found
    if not path.exists():
        raise MonitorError(f"{path} does not exist: give ROWS=<file or folder> of served rows")
    if path.suffix not in SUFFIXES:
        raise MonitorError(f"{path}: served rows must be {', '.join(SUFFIXES)} files")
    return [path]


def _table(path: Path) -> pd.DataFrame:
    """One ``.csv`` or ``.parquet`` table, read as the pipeline reads the raw table."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        kind = path.suffix.lstrip(".").upper()
        raise MonitorError(
            f"{path} is not a {kind} table ({' '.join(str(error).split())})"
        ) from None


def _prediction_fields(target: Target) -> list[Any]:
    """The Arrow fields of the record's ``/predict`` fields that the monitor reads."""
    import pyarrow as pa

    if target.task == "multiclass":
        classes = [pa.field(str(c), pa.float64()) for c in target.labels]
        return [pa.field(PROBABILITIES, pa.struct(classes))]
    if target.task == "regression":
        return [pa.field(PREDICTION, pa.float64()), pa.field(INTERVAL, pa.list_(pa.float64()))]
    return [pa.field(PROBABILITY, pa.float64())]


def _prediction_columns(table: Any, target: Target, path: Path) -> dict[str, pd.Series]:
    """The log's prediction fields as the batch scorer's columns (see :func:`output_columns`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if target.task == "multiclass":
        probabilities = table.column(PROBABILITIES).combine_chunks()
        return {
            f"{PROBABILITY_OF}{c}": probabilities.field(k).to_pandas()
            for k, c in enumerate(target.labels)
        }
    if target.task == "regression":
        interval = table.column(INTERVAL)
        try:
            low, high = (pc.list_element(interval, i).to_pandas() for i in (0, 1))
        except pa.ArrowInvalid:
            raise MonitorError(
                f"{path}: an {INTERVAL!r} that is not a pair [low, high]: the service writes "
                "one per record"
            ) from None
        return {PREDICTION: table.column(PREDICTION).to_pandas(), LOW: low, HIGH: high}
    return {PROBABILITY: table.column(PROBABILITY).to_pandas()}


def _log(path: Path, schema: Schema) -> pd.DataFrame:
    """One request-log file: the ``record`` fields as columns, ``id`` and the prediction's."""
    import pyarrow as pa
    import pyarrow.json as pj

    with path.open("rb") as lines:
        first = next((line for line in lines if line.strip()), None)
    if first is None:
        return pd.DataFrame()
    try:
        record = json.loads(first)["record"]
        absent = [name for name in schema.features if name not in record]
    except (ValueError, KeyError, TypeError):
        raise MonitorError(
            f"{path} is not a request log: its first line is not a JSON object with a 'record'"
        ) from None
    if absent:
        return pd.DataFrame(columns=[name for name in schema.features if name not in absent])
    # An explicit schema: Arrow then never guesses a column's type from its first block, and
    # fields the monitor does not read (time, label, model_version) are skipped unparsed.
    # audit columns (never features) are read where the records carry them
    read = {n: f for n, f in schema.checked.items() if n in schema.features or n in record}
    fields = [
        pa.field(name, pa.string() if feature.type == "category" else pa.float64())
        for name, feature in read.items()
    ]
    explicit = pa.schema(
        [
            (LOG_ID, pa.string()),
            *_prediction_fields(schema.target),
            ("record", pa.struct(fields)),
        ]
    )
    options = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(path, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise MonitorError(f"{path} is not a request log of this schema ({reason})") from None
    records = table.column("record").combine_chunks()
    columns = {name: records.field(i).to_pandas(types_mapper=None) for i, name in enumerate(read)}
    columns[LOG_ID] = table.column(LOG_ID).to_pandas()
    columns |= _prediction_columns(table, schema.target, path)
    return pd.DataFrame(columns)


def _numbers(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The columns as a float matrix; text that is no number becomes NaN."""
    return np.column_stack(
        [pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64) for name in names]
    )


def read_output(
    frame: pd.DataFrame, target: Target, file: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    """The served output (and a regression's interval) of one file's rows; NaN where none.

    Raises:
        MonitorError: Some but not all of a multiclass model's columns, probabilities outside
            [0, 1], or predictions that are not finite numbers (NaN or empty included).
    """
    names = output_columns(target)
    present = [name for name in names if name in frame.columns]
    rows = len(frame)
    interval = np.full((rows, 2), np.nan) if target.task == "regression" else None
    if not present:
        empty = np.full((rows, len(names)), np.nan) if target.task == "multiclass" else None
        return (empty if empty is not None else np.full(rows, np.nan)), interval
    if len(present) < len(names):
        absent = [name for name in names if name not in present]
        raise MonitorError(
            f"{file}: the columns {', '.join(repr(n) for n in absent[:MAX_EXAMPLES])} are "
            f"missing beside {present[0]!r}: give every class's probability, or none to score "
            "the rows with the current model"
        )
    values = _numbers(frame, names)
    if target.task == "regression":
        if not np.isfinite(values).all():
            raise MonitorError(
                f"{file}: the {PREDICTION!r} column holds values that are not finite numbers: "
                "drop the column to score the rows with the current model"
            )
        if LOW in frame.columns and HIGH in frame.columns:
            interval = _numbers(frame, [LOW, HIGH])
        return values[:, 0], interval
    if np.any(~np.isfinite(values) | (values < 0) | (values > 1)):
        shown = PROBABILITY if target.task == "binary" else f"{PROBABILITY_OF}<class>"
        raise MonitorError(
            f"{file}: the {shown!r} column{'s hold' if target.task != 'binary' else ' holds'} "
            "values that are not scores in [0, 1]: drop the column"
            f"{'s' if target.task != 'binary' else ''} to score the rows with the current model"
        )
    return (values if target.task == "multiclass" else values[:, 0]), interval


def read_served(path: Path, schema: Schema) -> Served:
    """Read served rows from a file or folder (see the module's docstring).

    Raises:
        MonitorError: No readable rows, a file that is not a table or log, a missing feature
            column (named), or served outputs that no model gives (:func:`read_output`).
    """
    files = files_of(path)
    frames, ids, outputs = [], [], []
    intervals: list[np.ndarray] = []
    for file in files:
        frame = _log(file, schema) if file.suffix == ".jsonl" else _table(file)
        if frame.empty and len(frame.columns) == 0:
            continue  # an empty file: nothing served yet
        missing = [name for name in schema.features if name not in frame.columns]
        if missing:
            raise MonitorError(
                f"{file}: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing[:MAX_EXAMPLES])} (the schema lists "
                f"{'them' if len(missing) > 1 else 'it'}): served rows need every feature column"
            )
        id_column = LOG_ID if file.suffix == ".jsonl" else schema.id
        ids.append(
            frame[id_column]
            .astype("string")
            .astype(object)
            .where(frame[id_column].notna(), None)
            .to_numpy()
            if id_column in frame.columns
            else np.full(len(frame), None, dtype=object)
        )
        output, interval = read_output(frame, schema.target, file)
        outputs.append(output)
        if interval is not None:
            intervals.append(interval)
        audited = [name for name in schema.audit if name in frame.columns]
        frames.append(frame[[*schema.features, *audited]])
    rows = sum(len(frame) for frame in frames)
    if rows == 0:
        names = files[0] if len(files) == 1 else f"{len(files)} files under {path}"
        raise MonitorError(f"{names}: no served rows to compare")
    combined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return Served(
        combined.reset_index(drop=True),
        np.concatenate(ids),
        np.concatenate(outputs),
        np.concatenate(intervals) if schema.target.task == "regression" else None,
        tuple(files),
    )


def parse_labels(label: pd.Series, target: Target) -> tuple[np.ndarray, np.ndarray, str]:
    """Late labels (text) in the model's terms, which of them are bad, and what a good one is.

    Returns:
        The values (binary: 1 for the positive class, else 0; multiclass: the class's position
        in the schema's order; regression: the number), a mask of the labels that are none of
        them, and the words that say what a label must be.
    """
    if target.task == "regression":
        number = pd.to_numeric(label, errors="coerce").to_numpy(dtype=np.float64)
        return number, ~np.isfinite(number), "a finite number (a regression's target)"
    names = [str(v) for v in target.labels]
    positions = pd.Index(names).get_indexer(pd.Index(label.fillna("\0")))
    bad = positions < 0
    expected = f"one of the target {target.column!r}'s values {names}"
    if target.task == "multiclass":
        return positions.astype(np.int16), bad, expected
    return (label == str(target.positive)).fillna(False).to_numpy(dtype=np.int8), bad, expected


def read_labels(path: Path, schema: Schema) -> pd.Series:
    """Late labels in the model's terms (:func:`parse_labels`), indexed by id (as text).

    Raises:
        MonitorError: Not a CSV of ``id,label``, a label that the target cannot take (named,
            with a few of its ids), or an id with two different labels.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise MonitorError(f"LABELS {path} does not exist: give a CSV of id,label") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise MonitorError(f"LABELS {path} is not a CSV table ({reason})") from None
    missing = [c for c in LABELS_COLUMNS if c not in frame.columns]
    if missing:
        raise MonitorError(
            f"LABELS {path} lacks the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}: late labels are a CSV with the columns id,label"
        )
    label = frame["label"]
    values, bad, expected = parse_labels(label, schema.target)
    if bad.any():
        first = label[bad].iloc[0]
        shown = "an empty label" if pd.isna(first) else f"label {first!r}"
        where = frame.loc[bad & (label.fillna("\0") == (first if pd.notna(first) else "\0")), "id"]
        outside = (
            f"labels outside {[str(v) for v in schema.target.labels]}"
            if schema.target.task != "regression"
            else "labels that are not finite numbers"
        )
        raise MonitorError(
            f"LABELS {path}: {shown} (id {', '.join(str(i) for i in where.head(MAX_EXAMPLES))}; "
            f"{int(bad.sum()):,} rows with {outside}) is not {expected}: fix those rows"
        )
    distinct = frame.assign(value=values).drop_duplicates(["id", "value"])
    conflicting = distinct["id"].duplicated()
    if conflicting.any():
        raise MonitorError(
            f"LABELS {path}: id {distinct['id'][conflicting].iloc[0]!r} has two different "
            "labels: keep one label per id"
        )
    distinct = distinct.drop_duplicates("id")
    return pd.Series(
        distinct["value"].to_numpy(dtype=values.dtype),
        index=pd.Index(distinct["id"].to_numpy(dtype=object), name="id"),
    )


def join_labels(served_ids: np.ndarray, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The served rows that have a label, and their labels.

    Returns:
        Positions of the matched served rows and their labels (:func:`read_labels`'s values
        and type), in served order.
    """
    found = labels.reindex(pd.Index(served_ids, dtype=object))
    matched = np.flatnonzero(found.notna().to_numpy())
    return matched, found.to_numpy()[matched].astype(labels.to_numpy().dtype)


def unused_labels(served_ids: np.ndarray, labels: pd.Series) -> int:
    """How many labels name no served row."""
    return int((~labels.index.isin(pd.Index(served_ids, dtype=object))).sum())
