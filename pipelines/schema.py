"""The one feature schema: target, id, and each feature's type, categories, range and nullability.

The schema file is generated once from the data (``make schema``) and owned by humans after
that. The validation suite, the featurizer and the serving request model are all built from it,
so training and serving cannot drift apart.

A column under ``audit:`` instead of ``features:`` is in the data and validated by the same rules,
but never a feature: the model never sees it. The fairness audit (``fairness.sensitive``) can
name it, and the service accepts it in a record (optional) to count its decisions by group.

Usage: ``python -m pipelines.schema --target LABEL --id ID --positive CLASS [--audit A,B]
[--force]``
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.core.io import PipelineError, run_stage
from pipelines.core.metrics import TASKS, Task
from pipelines.params import load_paths

MAX_CATEGORIES = 50
MAX_CLASSES = 50  # a multiclass target with more classes is more likely an id or a number

HEADER = """\
# Feature schema of the raw table: the one contract for validation, featurization and serving.
# Generated once from the data by `make schema`; owned by humans from then on. Review changes
# to it like code: a new category, a wider range or a nullable column changes what the model
# accepts in production.
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Frozen):
    """The label column, what the model predicts of it, and its classes.

    ``binary``: ``values`` are the two classes (negative first) and ``positive`` the one whose
    probability the model gives. ``multiclass``: ``classes`` in the order the model's outputs
    follow. ``regression``: a number, no classes. A schema without ``task`` is binary.
    """

    column: str
    task: Task = "binary"
    positive: str | int | None = None
    values: tuple[str | int, str | int] | None = None
    classes: tuple[str | int, ...] | None = None

    @model_validator(mode="after")
    def _classes_fit_the_task(self) -> Target:
        if self.task == "binary":
            if self.positive is None or self.values is None or self.classes is not None:
                raise ValueError("a binary target takes 'positive' and 'values', not 'classes'")
            if self.positive not in self.values:
                raise ValueError(
                    f"positive class {self.positive!r} is not one of {list(self.values)}"
                )
        elif self.task == "multiclass":
            if self.positive is not None or self.values is not None:
                raise ValueError("a multiclass target takes 'classes', not 'positive'/'values'")
            classes = [str(c) for c in self.classes or ()]
            if len(set(classes)) != len(classes):
                raise ValueError(f"a class appears twice in 'classes': {classes}")
            if not 3 <= len(classes) <= MAX_CLASSES:
                raise ValueError(
                    f"a multiclass target needs 3 to {MAX_CLASSES} 'classes', got {len(classes)}"
                )
        elif self.positive is not None or self.values is not None or self.classes is not None:
            raise ValueError("a regression target takes no 'positive', 'values' or 'classes'")
        return self

    @property
    def labels(self) -> tuple[str | int, ...]:
        """The classes in the order the model numbers them (binary: negative, positive)."""
        if self.task == "binary":
            return tuple(self.values or ())
        return tuple(self.classes or ())


class Rows(_Frozen):
    """Plausible bounds on the number of rows of the raw table."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)


class Feature(_Frozen):
    """One input column of the model."""

    type: Literal["integer", "number", "category"]
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    max_null_fraction: float = Field(default=0.0, ge=0, le=1)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "category":
            if not self.categories:
                raise ValueError("a category feature needs a non-empty 'categories' list")
            if self.min is not None or self.max is not None:
                raise ValueError("a category feature takes no 'min'/'max'")
        else:
            if self.categories is not None:
                raise ValueError(f"a {self.type} feature takes no 'categories'")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def nullable(self) -> bool:
        """Whether the column may hold missing values at all."""
        return self.max_null_fraction > 0


class Schema(_Frozen):
    """The whole schema file."""

    target: Target
    id: str
    rows: Rows
    features: dict[str, Feature]
    audit: dict[str, Feature] = Field(default_factory=dict)  # in the data, never a feature

    @model_validator(mode="after")
    def _distinct_columns(self) -> Schema:
        for special in (self.target.column, self.id):
            if special in self.features or special in self.audit:
                raise ValueError(
                    f"column {special!r} is the target or id and cannot be a feature or audited"
                )
        if self.target.column == self.id:
            raise ValueError("target and id must be different columns")
        both = sorted(set(self.features) & set(self.audit))
        if both:
            raise ValueError(f"columns {both} are under both features: and audit: (choose one)")
        return self

    @property
    def checked(self) -> dict[str, Feature]:
        """Every column validated by a feature's rules: the features, then the audit columns."""
        return {**self.features, **self.audit}

    @property
    def columns(self) -> list[str]:
        """Every column of the raw table, in schema order: id, features, audit columns, target."""
        return [self.id, *self.features, *self.audit, self.target.column]


class SchemaError(PipelineError):
    """The schema file is missing or invalid."""


def load_schema(path: Path) -> Schema:
    """Read and validate a schema file.

    Raises:
        SchemaError: The file is missing or does not describe a valid schema.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"{path} does not exist: create it with `make schema`")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SchemaError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    try:
        return Schema.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise SchemaError(f"{path}: {problems}") from None


def columns_of(text: str) -> tuple[str, ...]:
    """Column names separated by commas (``AUDIT="sex,age band"``): a name may hold spaces."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw table as every stage does.

    Plain ``pd.read_csv`` on purpose: a text value in a numeric column then shows up as a
    non-numeric dtype, which the type expectations catch.

    Raises:
        OSError: The file is missing or unreadable.
        pandas.errors.ParserError: The file is not a CSV table.
        pandas.errors.EmptyDataError: The file is empty.
    """
    return pd.read_csv(path)


def _nice(value: float, up: bool) -> float:
    """Round outward to two significant digits, so generated bounds read like a human's."""
    if value == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return float(round(rounded, 10))


def infer_feature(column: pd.Series) -> Feature:
    """Describe one column from its data, with ranges widened to plausible bounds.

    A 0/1 column keeps exactly [0, 1]; other numeric ranges are widened by half their span
    (and not below zero for a non-negative column), then rounded outward.
    """
    nulls = float(column.isna().mean())
    # Allow a little more than seen, so a new batch with one more missing value still passes.
    max_null_fraction = 0.0 if nulls == 0 else _nice(min(1.0, nulls * 2), up=True)
    values = column.dropna()
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        categories = sorted(str(v) for v in values.unique())
        if len(categories) > MAX_CATEGORIES:
            raise SchemaError(
                f"column {column.name!r} has {len(categories)} distinct text values "
                f"(more than {MAX_CATEGORIES}): drop it or encode it before training"
            )
        return Feature(
            type="category", categories=tuple(categories), max_null_fraction=max_null_fraction
        )
    kind: Literal["integer", "number"] = (
        "integer" if pd.api.types.is_integer_dtype(column) else "number"
    )
    low, high = float(values.min()), float(values.max())
    if set(values.unique()) <= {0, 1}:
        return Feature(type=kind, min=0, max=1, max_null_fraction=max_null_fraction)
    span = high - low
    lower = low - span / 2
    if low >= 0:
        lower = max(0.0, lower)
    return Feature(
        type=kind,
        min=_nice(lower, up=False),
        max=_nice(high + span / 2, up=True),
        max_null_fraction=max_null_fraction,
    )


def infer_task(column: pd.Series) -> tuple[Task, str]:
    """What a model of this target column predicts, and why (AutoGluon's rule).

    Two distinct values: binary. Text, categories or booleans: multiclass. Whole numbers with
    few distinct values for the row count (at most :data:`MAX_CLASSES`, and at most 10% of the
    rows, 5% from 1,000 rows on): multiclass. Any other number: regression.
    """
    values = column.dropna()
    distinct = values.nunique()
    name = column.name
    if distinct == 2:
        shown = ", ".join(repr(v) for v in sorted(values.unique().tolist(), key=str))
        return "binary", f"{name!r} has two distinct values ({shown})"
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return "multiclass", f"{name!r} holds text with {distinct} distinct values"
    numbers = values.to_numpy(dtype=np.float64)
    whole = bool(np.all(np.isfinite(numbers)) and np.all(np.mod(numbers, 1) == 0))
    share = 0.1 if len(values) < 1000 else 0.05
    if whole and distinct <= min(MAX_CLASSES, share * len(values)):
        return "multiclass", (
            f"{name!r} holds whole numbers with only {distinct} distinct values in "
            f"{len(values):,} rows (at most {share:.0%} of the rows and {MAX_CLASSES})"
        )
    kind = "whole numbers" if whole else "numbers"
    return "regression", f"{name!r} holds {kind} with {distinct:,} distinct values"


def infer_target(column: pd.Series, task: Task, positive: str | int | None = None) -> Target:
    """The schema's target for a column and task (classes matched to POSITIVE as text).

    Raises:
        SchemaError: The column does not have the classes the task needs, or POSITIVE is not
            one of them.
    """
    name = str(column.name)
    classes = sorted(column.dropna().unique().tolist(), key=str)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise SchemaError(f"target {name!r} is not numeric: a regression needs numbers")
        return Target(column=name, task=task)
    if task == "multiclass":
        try:
            return Target(column=name, task=task, classes=tuple(classes))
        except ValidationError:
            raise SchemaError(
                f"target {name!r} has {len(classes)} classes: a multiclass model takes 3 to "
                f"{MAX_CLASSES}"
            ) from None
    if len(classes) != 2:
        raise SchemaError(f"target {name!r} must have two classes, found {classes}")
    # The positive class arrives as text from the command line; match it to the target's values.
    matches = [c for c in classes if str(c) == str(positive)]
    if not matches:
        raise SchemaError(f"positive class {positive!r} is not a value of {name!r} ({classes})")
    negative = next(c for c in classes if c != matches[0])
    return Target(column=name, positive=matches[0], values=(negative, matches[0]))


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    id_column: str,
    positive: str | int | None = None,
    task: Task | None = None,
    *,
    audit: tuple[str, ...] = (),
) -> Schema:
    """Generate a schema from a raw table.

    Args:
        frame: The raw table.
        target: Name of the label column.
        id_column: Name of the unique row id column (never a feature).
        positive: A binary target's positive class.
        task: binary, multiclass or regression; inferred from the target (:func:`infer_task`)
            when not given.
        audit: Columns kept out of the model: validated, audited for fairness, never features.

    Raises:
        SchemaError: A named column is missing, or the target does not fit the task.
    """
    for name in (target, id_column, *audit):
        if name not in frame.columns:
            raise SchemaError(f"column {name!r} is not in the table ({', '.join(frame.columns)})")
    for name in set(audit) & {target, id_column}:
        raise SchemaError(f"column {name!r} is the target or id and cannot be audited")
    task = task or infer_task(frame[target])[0]
    columns = {
        str(name): infer_feature(frame[name])
        for name in frame.columns
        if name not in (target, id_column)
    }
    try:
        return Schema(
            target=infer_target(frame[target], task, positive),
            id=id_column,
            rows=Rows(min=max(1, len(frame) // 2), max=len(frame) * 10),
            features={n: f for n, f in columns.items() if n not in audit},
            audit={n: f for n, f in columns.items() if n in audit},
        )
    except ValidationError as error:
        raise SchemaError("; ".join(e["msg"] for e in error.errors())) from None


class _Dumper(yaml.SafeDumper):
    """Writes short lists on one line and whole-number floats as integers."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    float,
    lambda d, v: d.represent_int(int(v)) if v.is_integer() else d.represent_float(v),
)


def dump_schema(schema: Schema) -> str:
    """The schema as commented YAML, in the layout humans edit."""
    document = schema.model_dump(mode="json", exclude_defaults=True)
    document["target"] = schema.target.model_dump(mode="json", exclude_none=True)
    for section in ("features", "audit"):
        for name, feature in getattr(schema, section).items():
            document[section][name] = feature.model_dump(mode="json", exclude_defaults=True)
    return HEADER + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )


def main(argv: list[str] | None = None) -> int:
    """Write the schema file from the raw table (``make schema``)."""
    paths = load_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=paths.raw)
    parser.add_argument("--out", type=Path, default=paths.schema_)
    parser.add_argument("--target", help="label column (default: the current schema's)")
    parser.add_argument("--id", dest="id_column", help="row id column (default: the current's)")
    parser.add_argument("--positive", help="positive class (default: the current schema's)")
    parser.add_argument(
        "--task", choices=TASKS, help="binary, multiclass or regression (default: inferred)"
    )
    parser.add_argument(
        "--audit",
        type=columns_of,
        help="columns kept out of the model, audited for fairness, separated by commas "
        "(default: the current schema's; empty: none)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing schema")
    args = parser.parse_args(argv)

    try:
        current = load_schema(args.out) if args.out.exists() else None
    except SchemaError:
        if not args.force:
            raise
        current = None  # a broken schema is being replaced: nothing to carry over
    if current and not args.force:
        print(
            f"{args.out} exists and is owned by humans now; edit it, or regenerate it with "
            "`make schema FORCE=1` and review the diff.",
            file=sys.stderr,
        )
        return 1
    target = args.target or (current.target.column if current else None)
    id_column = args.id_column or (current.id if current else None)
    positive = args.positive or (current.target.positive if current else None)
    task = args.task or (current.target.task if current else None)
    audit = tuple(args.audit if args.audit is not None else (current.audit if current else ()))
    if target is None or id_column is None:
        parser.error("the first schema needs --target and --id (and --positive when binary)")
    try:
        raw = read_raw(args.raw)
        if task is None and target in raw.columns:
            task, why = infer_task(raw[target])
            print(f"task: {task}, because {why} (--task overrides it)")
        if task == "binary" and positive is None:
            parser.error("a binary target needs --positive: the class the model gives odds of")
        schema = infer_schema(raw, target, id_column, positive, task, audit=audit)
    except SchemaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.out.write_text(dump_schema(schema))
    print(
        f"wrote {args.out}: {len(schema.features)} features"
        + (f", {len(schema.audit)} audit-only columns" if schema.audit else "")
        + f", {schema.target.task} target {target!r}; review it"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
