"""``make refresh-data``: a new version of the training table with labelled production rows.

The new table is the current raw table plus the served rows that have a late label, joined by
id exactly as ``make monitor`` joins them (:mod:`pipelines.monitoring.served`). A served row
without a label is no training data: the model learns the target, and only a label says what it
was. The new rows take the schema's columns (id, features, target) in the raw table's column
order and types, so a new version differs from the last by rows only; the target gets the label
in the data's own terms, whatever the task: one of a binary target's two values, a class of a
multiclass one, a regression's number.

Rows that break ``schema.yaml`` (a type, a range, a category, a missing value where none is
allowed, more missing values than ``max_null_fraction`` lets the table hold) are **dropped and
counted** per column and rule, rather than stopping the refresh: production rows are many and
noisy, one bad record must not hold back retraining, and the count, printed and written to the
summary, says when a feed is broken. The refresh stops when no labelled row is left, or when
the table would break ``rows.max``.

Duplicates by id: the last served row of an id wins (the files are read in path order, a log's
lines in time order), and a served row replaces the raw row of the same id (its label is the
newer truth about that record).

The table is then recorded as a new DVC data version (``dvc add``: the ``.dvc`` file changes) and
pushed to the default DVC remote when one is set, so the retraining pull request's pipeline can
get it.

Usage: ``python -m pipelines.monitoring.refresh ROWS --labels CSV [--summary PATH]``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.io import PipelineError, run_stage, write_atomically
from pipelines.monitoring.served import join_labels, read_labels, read_served
from pipelines.params import load_paths
from pipelines.schema import Schema, Target, load_schema, read_raw
from pipelines.stages.data import write_csv_atomically

ID_RULE = ("id", "missing or not of the raw table's id type")


class RefreshError(PipelineError):
    """No new training table can be made from these rows."""


@dataclass(frozen=True)
class Refresh:
    """What a refresh did.

    Attributes:
        table: The new raw table, in the raw table's column order.
        raw_rows: Rows of the current raw table.
        served_rows: Served rows read.
        labelled: Served rows with a late label.
        dropped: Labelled rows dropped, by (column, rule).
        duplicates: Labelled rows that an later row of the same id replaced.
        replaced: Raw rows replaced by a served row of the same id.
        added: Rows the table gained (new ids).
    """

    table: pd.DataFrame
    raw_rows: int
    served_rows: int
    labelled: int
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: int = 0
    replaced: int = 0
    added: int = 0

    def lines(self) -> list[str]:
        """The summary, one fact per line."""
        kept = self.labelled - sum(self.dropped.values()) - self.duplicates
        lines = [
            f"{self.served_rows:,} served rows, {self.labelled:,} with a label "
            f"({self.served_rows - self.labelled:,} without one are not training data)",
            f"{sum(self.dropped.values()):,} labelled rows break schema.yaml and were dropped",
            *[
                f"  - {column}: {rule}: {count:,}"
                for (column, rule), count in sorted(self.dropped.items())
            ],
            f"{self.duplicates:,} labelled rows superseded by a later row of the same id",
            f"{kept:,} rows kept: {self.replaced:,} replace raw rows of the same id, "
            f"{self.added:,} are new",
            f"the table: {self.raw_rows:,} -> {len(self.table):,} rows",
        ]
        return lines


def _numeric(values: pd.Series) -> pd.Series:
    """Values as numbers; text that is no number becomes NaN (a type error, not a null)."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)  # true/false is no number of the schema
    return pd.to_numeric(values, errors="coerce")


def breaks(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Which rule of the schema each cell breaks, or an empty string.

    One column per feature and audit column (:attr:`pipelines.schema.Schema.checked`).

    Null fractions are a rule of the whole table and are checked by :func:`refresh`.
    """
    found = pd.DataFrame("", index=frame.index, columns=list(schema.checked))
    for name, feature in schema.checked.items():
        values = frame[name]
        null = values.isna().to_numpy()
        rule = np.full(len(frame), "", dtype=object)
        if not feature.nullable:
            rule[null] = "missing value"
        if feature.type == "category":
            allowed = set(feature.categories or ())
            outside = ~null & ~values.astype("string").isin(allowed).fillna(False).to_numpy()
            rule[outside] = "not one of the schema's categories"
        else:
            number = _numeric(values).to_numpy(dtype=np.float64)
            wrong = ~null & ~np.isfinite(number)
            if feature.type == "integer":
                wrong |= ~null & np.isfinite(number) & (number != np.round(number))
            rule[wrong] = f"not of type {feature.type}"
            ok = ~null & ~wrong
            if feature.min is not None:
                rule[ok & (number < feature.min)] = f"below min {feature.min:g}"
            if feature.max is not None:
                rule[ok & (number > feature.max)] = f"above max {feature.max:g}"
        found[name] = rule
    return found


def _within_null_fractions(
    raw: pd.DataFrame, kept: pd.DataFrame, schema: Schema, dropped: Counter[tuple[str, str]]
) -> pd.DataFrame:
    """``kept`` without the new rows whose missing values would break a ``max_null_fraction``.

    A nullable column's null fraction is a rule of the whole table. The rows a dropped row
    would have replaced stay, and a dropped row leaves the table too (the fraction's
    denominator), so the rows are counted again until every column keeps its fraction.
    """
    while True:
        base = raw.loc[~raw[schema.id].isin(kept[schema.id]).to_numpy()]
        changed = False
        for name, feature in schema.checked.items():
            share = feature.max_null_fraction
            nulls = np.flatnonzero(kept[name].isna().to_numpy())
            if len(nulls) == 0 or share >= 1:
                continue
            # k new nulls fit when (base nulls + k) <= share * (rows without a new null + k)
            present = len(base) + len(kept) - len(nulls)
            fits = (share * present - int(base[name].isna().sum())) / (1 - share)
            room = max(int(np.floor(fits + 1e-9)), 0)
            if len(nulls) > room:
                over = kept.index[nulls[room:]]
                rule = f"missing values beyond max_null_fraction {share:g}"
                dropped[(name, rule)] += len(over)
                kept = kept.drop(index=over)
                changed = True
        if not changed:
            return kept


def _ids_like(ids: pd.Series, raw_ids: pd.Series) -> pd.Series:
    """Served ids (text) in the raw table's id type; NaN where one cannot be."""
    if pd.api.types.is_integer_dtype(raw_ids):
        number = pd.to_numeric(ids, errors="coerce")
        integral = number.notna() & (number == number.round())
        return number.where(integral).astype("Int64")
    return ids.astype("string")


def _cast_like(new: pd.DataFrame, raw: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """New rows in the raw table's column types, so the CSV writes 1, not 1.0."""
    cast = new.copy()
    cast[schema.id] = cast[schema.id].astype(raw[schema.id].dtype)  # unparsable ids are gone
    for name, feature in schema.checked.items():
        if feature.type == "category":
            cast[name] = cast[name].astype(raw[name].dtype)
            continue
        number = _numeric(cast[name])
        if pd.api.types.is_integer_dtype(raw[name]) and number.notna().all():
            cast[name] = number.astype(raw[name].dtype)
        else:
            cast[name] = number
    return cast


def target_values(labels: np.ndarray, target: Target, like: pd.Series) -> pd.Series:
    """Late labels (:func:`pipelines.monitoring.served.read_labels`' values) in the data's terms.

    Args:
        labels: 1/0 for a binary target, class positions for a multiclass one, numbers for a
            regression.
        target: The schema's target.
        like: The raw table's target column: whole numbers stay whole where it holds integers.
    """
    if target.task == "regression":
        values = pd.Series(labels, dtype=np.float64)
        if pd.api.types.is_integer_dtype(like) and bool((values == values.round()).all()):
            values = values.astype(like.dtype)
        return values
    classes: list[Any] = list(target.labels)
    if target.task == "binary":  # 1 is the positive class, whichever place values give it
        (negative,) = [v for v in classes if v != target.positive]
        classes = [negative, target.positive]
    # A list, not an object array: pandas then infers the type the raw column has (text, int)
    values = pd.Series([classes[i] for i in labels.astype(np.intp).tolist()])
    return values


def refresh(
    raw: pd.DataFrame,
    served: pd.DataFrame,
    served_ids: np.ndarray,
    labels: pd.Series,
    schema: Schema,
) -> Refresh:
    """The new training table: ``raw`` plus the labelled served rows that the schema accepts.

    Args:
        raw: The current raw table.
        served: Served rows, the schema's feature columns.
        served_ids: Each served row's id as text (None where it has none).
        labels: Late labels in the model's terms, indexed by id as text
            (:func:`pipelines.monitoring.served.read_labels`).
        schema: The schema both tables follow.

    Raises:
        RefreshError: The raw table lacks a schema column, no labelled row is left, or the
            table would hold more rows than ``rows.max``.
    """
    missing = [c for c in schema.columns if c not in raw.columns]
    if missing:
        raise RefreshError(f"the raw table lacks the schema's columns {missing}: run `make data`")
    matched, y = join_labels(served_ids, labels)
    if matched.size == 0:
        raise RefreshError(
            f"none of the {len(served):,} served rows has a label: a refresh adds labelled rows "
            "only (LABELS=<csv of id,label> naming the served rows' ids)"
        )
    new = served.iloc[matched].reset_index(drop=True)
    for name in schema.audit:  # a record may leave out an audit column: then it is missing
        if name not in new.columns:
            new[name] = None
    ids = pd.Series(served_ids[matched], dtype="string")
    new.insert(0, schema.id, _ids_like(ids, raw[schema.id]))
    target = schema.target.column
    new[target] = target_values(y, schema.target, raw[target]).to_numpy()
    dropped: Counter[tuple[str, str]] = Counter()
    bad_id = new[schema.id].isna().to_numpy()
    dropped[ID_RULE] += int(bad_id.sum())
    cells = breaks(new, schema)
    first_rule = cells.apply(lambda row: next((c for c in row.index if row[c]), ""), axis=1)
    for position in np.flatnonzero(~bad_id & (first_rule != "").to_numpy()):
        column = first_rule.iloc[position]
        dropped[(column, cells.iloc[position][column])] += 1
    new = new[~bad_id & (first_rule == "").to_numpy()]
    kept = new.drop_duplicates(schema.id, keep="last")
    duplicates = len(new) - len(kept)
    kept = _cast_like(kept, raw, schema)
    kept = _within_null_fractions(raw, kept, schema, dropped)
    if kept.empty:
        raise RefreshError(
            f"all {matched.size:,} labelled rows break schema.yaml ("
            + ", ".join(f"{c}: {r}: {n}" for (c, r), n in sorted(dropped.items()) if n)
            + "): nothing to add; fix the feed or the schema"
        )
    replaced = raw[schema.id].isin(kept[schema.id])
    # The raw table's own column order: a new version differs from the last by rows only.
    table = pd.concat([raw.loc[~replaced.to_numpy()], kept[schema.columns]])[list(raw.columns)]
    table = table.reset_index(drop=True)
    if len(table) > schema.rows.max:
        raise RefreshError(
            f"the new table would hold {len(table):,} rows, above rows.max {schema.rows.max:,} "
            "of schema.yaml: raise it there (a reviewed change) and run the refresh again"
        )
    return Refresh(
        table=table,
        raw_rows=len(raw),
        served_rows=len(served),
        labelled=int(matched.size),
        dropped={k: v for k, v in dropped.items() if v},
        duplicates=duplicates,
        replaced=int(replaced.sum()),
        added=len(kept) - int(replaced.sum()),
    )


def record(data: Path) -> None:
    """``dvc add`` the data folder (its ``.dvc`` file changes); push it when a remote is set."""
    from dvc.repo import Repo

    with Repo() as repo:
        repo.add(str(data))
        remote = repo.config.get("core", {}).get("remote")
        if remote:
            print(f"pushing the new data version to DVC remote '{remote}'")
            repo.push(targets=[str(data) + ".dvc"])


def main(argv: list[str] | None = None) -> int:
    """Write the new raw table, record it with DVC and print what changed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="served rows: .csv, .parquet, .jsonl or a folder")
    parser.add_argument("--labels", type=Path, required=True, help="CSV with the columns id,label")
    parser.add_argument("--summary", type=Path, help="also write the summary here (markdown)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    paths = load_paths(args.params)
    schema = load_schema(paths.schema_)
    served = read_served(args.rows, schema)
    done = refresh(
        read_raw(paths.raw), served.frame, served.ids, read_labels(args.labels, schema), schema
    )
    write_csv_atomically(done.table, paths.raw)
    record(paths.data)
    lines = done.lines()
    print("\n".join(lines))
    print(f"wrote {paths.raw} and recorded it in {paths.data_dvc}")
    if args.summary is not None:
        text = "#### Training data refreshed\n\n" + "\n".join(
            line if line.startswith("  - ") else f"- {line}" for line in lines
        )
        write_atomically(args.summary, lambda p: p.write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    run_stage(main)
