"""Served rows and late labels, as ``make monitor`` reads them.

Served rows come from a table (``.csv``, ``.parquet``) of raw records, the raw table's feature
columns with the id and target columns optional and a ``probability`` column when the rows were
already scored, or from the service's request log (``.jsonl``: one JSON object per record, the
raw feature values under ``record``, ``id`` and ``probability`` beside it). A folder stands for
every such file in it, sorted by path. Late labels are a CSV with the columns ``id,label``.

Everything is read column-wise (pandas, or Arrow's JSON reader for the log): a million rows take
seconds, and no Python runs per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.io import PipelineError
from pipelines.schema import Schema
from pipelines.serving.batch import PROBABILITY

SUFFIXES = (".csv", ".parquet", ".jsonl")
LOG_ID = "id"  # of a request-log line, and the id column of a labels file
LABELS_COLUMNS = ("id", "label")
MAX_EXAMPLES = 5


class MonitorError(PipelineError):
    """Served rows or labels that cannot be compared with the reference (exit 2)."""


@dataclass(frozen=True)
class Served:
    """Served rows, in file order.

    Attributes:
        frame: The raw feature columns (others are dropped).
        ids: Each row's id as text (None where a row has none), for joining late labels.
        probability: Each row's served score; NaN where the rows carried none.
        files: The files read.
    """

    frame: pd.DataFrame
    ids: np.ndarray
    probability: np.ndarray
    files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def unscored(self) -> np.ndarray:
        """Rows without a served score: the current model scores them."""
        return np.isnan(self.probability)


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


def _log(path: Path, schema: Schema) -> pd.DataFrame:
    """One request-log file: the ``record`` fields as columns, plus ``id`` and ``probability``."""
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
    fields = [
        pa.field(name, pa.string() if feature.type == "category" else pa.float64())
        for name, feature in schema.features.items()
    ]
    explicit = pa.schema(
        [(LOG_ID, pa.string()), (PROBABILITY, pa.float64()), ("record", pa.struct(fields))]
    )
    options = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(path, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise MonitorError(f"{path} is not a request log of this schema ({reason})") from None
    records = table.column("record").combine_chunks()
    columns = {
        name: records.field(i).to_pandas(types_mapper=None)
        for i, name in enumerate(schema.features)
    }
    columns[LOG_ID] = table.column(LOG_ID).to_pandas()
    columns[PROBABILITY] = table.column(PROBABILITY).to_pandas()
    return pd.DataFrame(columns)


def read_served(path: Path, schema: Schema) -> Served:
    """Read served rows from a file or folder (see the module's docstring).

    Raises:
        MonitorError: No readable rows, a file that is not a table or log, a missing feature
            column (named), or served scores outside [0, 1].
    """
    files = files_of(path)
    frames, ids, scores = [], [], []
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
        if PROBABILITY in frame.columns:
            p = pd.to_numeric(frame[PROBABILITY], errors="coerce").to_numpy(dtype=np.float64)
            if np.any(~np.isfinite(p) | (p < 0) | (p > 1)):
                raise MonitorError(
                    f"{file}: the {PROBABILITY!r} column holds values that are not scores in "
                    f"[0, 1]: drop the column to score the rows with the current model"
                )
        else:
            p = np.full(len(frame), np.nan)
        scores.append(p)
        frames.append(frame[list(schema.features)])
    rows = sum(len(frame) for frame in frames)
    if rows == 0:
        names = files[0] if len(files) == 1 else f"{len(files)} files under {path}"
        raise MonitorError(f"{names}: no served rows to compare")
    combined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return Served(
        combined.reset_index(drop=True),
        np.concatenate(ids),
        np.concatenate(scores),
        tuple(files),
    )


def read_labels(path: Path, schema: Schema) -> pd.Series:
    """Late labels: 1 for the positive class, 0 otherwise, indexed by id (as text).

    Raises:
        MonitorError: Not a CSV of ``id,label``, a label that is not one of the target's values
            (named, with a few of its ids), or an id with two different labels.
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
    values = [str(v) for v in schema.target.values]  # noqa: PD011 (a tuple, not a frame)
    label = frame["label"]
    bad = ~label.isin(values).fillna(False).to_numpy(dtype=bool)
    if bad.any():
        first = label[bad].iloc[0]
        shown = "an empty label" if pd.isna(first) else f"label {first!r}"
        where = frame.loc[bad & (label.fillna("\0") == (first if pd.notna(first) else "\0")), "id"]
        raise MonitorError(
            f"LABELS {path}: {shown} (id {', '.join(str(i) for i in where.head(MAX_EXAMPLES))}; "
            f"{int(bad.sum()):,} rows with labels outside {values}) is not one of the target "
            f"{schema.target.column!r}'s values {values}: fix those rows"
        )
    distinct = frame.assign(positive=label == str(schema.target.positive))
    distinct = distinct.drop_duplicates(["id", "positive"])
    conflicting = distinct["id"].duplicated()
    if conflicting.any():
        raise MonitorError(
            f"LABELS {path}: id {distinct['id'][conflicting].iloc[0]!r} has two different "
            "labels: keep one label per id"
        )
    distinct = distinct.drop_duplicates("id")
    return pd.Series(
        distinct["positive"].to_numpy(dtype=np.int8),
        index=pd.Index(distinct["id"].to_numpy(dtype=object), name="id"),
    )


def join_labels(served_ids: np.ndarray, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The served rows that have a label, and their labels.

    Returns:
        Positions of the matched served rows and their 0/1 labels, in served order.
    """
    found = labels.reindex(pd.Index(served_ids, dtype=object))
    matched = np.flatnonzero(found.notna().to_numpy())
    return matched, found.to_numpy()[matched].astype(np.int8)


def unused_labels(served_ids: np.ndarray, labels: pd.Series) -> int:
    """How many labels name no served row."""
    return int((~labels.index.isin(pd.Index(served_ids, dtype=object))).sum())
