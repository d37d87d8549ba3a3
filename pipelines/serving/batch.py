"""Batch scoring: score a table of raw rows offline with the current model.

Every row is checked against the schema before anything is scored, column by column with
vectorised pandas checks (the rules the service applies to each record: type, missing values,
categories, range), so a bad table stops with one line per broken rule and no output. The good
path is the pipeline's own :func:`pipelines.core.features.encode` and one call of the model on
the whole table, through the scorer the service uses.

The output has the input's id column (when it has one), then the model's task's columns, named
as in ``eval/predictions.csv``, one row per input row, in order:

- binary: ``probability`` (of the positive class) and ``label`` (the positive class at or above
  the model's threshold, ``meta.json``);
- multiclass: ``label`` (the most probable class, as the data writes it) and
  ``probability_<class>`` per class;
- regression: ``prediction``, and ``low`` and ``high``, its interval.

The target column may be present in the input and is ignored.

Usage: ``python -m pipelines.serving.batch INPUT.csv OUTPUT.csv``
(``make score INPUT=... OUTPUT=...``)
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.features import encode
from pipelines.core.io import PipelineError, run_stage, write_atomically
from pipelines.core.metrics import PROBABILITY as PROBABILITY_OF
from pipelines.core.metrics import decided_classes
from pipelines.core.model import LoadedModel, load_model
from pipelines.params import load_paths
from pipelines.schema import Feature, Schema, load_schema, read_raw
from pipelines.serving.scoring import Scorer

MAX_EXAMPLES = 5
PROBABILITY = "probability"
LABEL = "label"
PREDICTION, LOW, HIGH = "prediction", "low", "high"


class ScoreError(PipelineError):
    """The input table cannot be scored (unreadable, or rows that break the schema)."""


@dataclass(frozen=True)
class Problem:
    """One broken rule of the schema in the table to score.

    Attributes:
        column: The offending column.
        rule: What the schema requires, e.g. ``values in ['own', 'rent', 'other']``.
        bad_rows: How many rows break the rule; None for a missing or unexpected column.
        examples: A few distinct offending values.
        where: Ids of a few offending rows or, without an id column, their 1-based numbers.
        where_kind: ``"ids"`` or ``"rows"``: what ``where`` holds.
    """

    column: str
    rule: str
    bad_rows: int | None = None
    examples: list[Any] = field(default_factory=list)
    where: list[Any] = field(default_factory=list)
    where_kind: str = "rows"


def _rows(frame: pd.DataFrame, bad: pd.Series, schema: Schema, rule: str, column: str) -> Problem:
    """A problem for the rows where ``bad`` is true, with a few examples and ids."""
    values = frame.loc[bad, column]
    examples = [v.item() if isinstance(v, np.generic) else v for v in values.dropna().unique()]
    if schema.id in frame.columns:
        where, kind = frame.loc[bad, schema.id].head(MAX_EXAMPLES).tolist(), "ids"
    else:
        where, kind = (np.flatnonzero(bad.to_numpy())[:MAX_EXAMPLES] + 1).tolist(), "rows"
    return Problem(column, rule, int(bad.sum()), examples[:MAX_EXAMPLES], where, kind)


def _bounds_rule(feature: Feature) -> str:
    low = None if feature.min is None else f"{feature.min:g}"
    high = None if feature.max is None else f"{feature.max:g}"
    if low is not None and high is not None:
        return f"values between {low} and {high}"
    return f"values >= {low}" if high is None else f"values <= {high}"


def _column_problems(
    frame: pd.DataFrame, name: str, feature: Feature, schema: Schema
) -> list[Problem]:
    """The broken rules of one feature column, each with the rows that break it."""
    values = frame[name]
    present = values.notna()
    checks: list[tuple[str, pd.Series]] = []
    if not feature.nullable:
        checks.append(("no missing values", ~present))
    if feature.type == "category":
        allowed = list(feature.categories or ())
        checks.append((f"values in {allowed}", present & ~values.isin(allowed)))
    else:
        # Text or true/false where a number belongs cannot be encoded: coerce and compare.
        numbers = (
            pd.Series(np.nan, index=values.index)
            if pd.api.types.is_bool_dtype(values)
            else pd.to_numeric(values, errors="coerce").astype(np.float64)
        )
        finite = pd.Series(np.isfinite(numbers.to_numpy()), index=values.index)
        checks.append(("a finite number", present & ~finite))
        if feature.type == "integer":
            checks.append(("whole numbers", finite & (numbers != numbers.round())))
        if feature.min is not None or feature.max is not None:
            low = -np.inf if feature.min is None else feature.min
            high = np.inf if feature.max is None else feature.max
            checks.append((_bounds_rule(feature), finite & ((numbers < low) | (numbers > high))))
    return [_rows(frame, bad, schema, rule, name) for rule, bad in checks if bad.any()]


def check_table(frame: pd.DataFrame, schema: Schema) -> list[Problem]:
    """Check every row of a table to score against the schema.

    The table must have every feature column; it may also have the id and target columns, and
    nothing else. Each value must be what the schema allows: text from the category list, or a
    finite number (whole for an integer feature) within the range; missing only where the schema
    allows missing values.

    Args:
        frame: The table as :func:`pipelines.schema.read_raw` reads it.
        schema: The feature schema.

    Returns:
        One problem per broken rule, in schema order; empty when every row can be scored.
    """
    problems = [
        Problem(name, "column listed in the schema")
        for name in schema.features
        if name not in frame.columns
    ]
    known = {*schema.features, *schema.audit, schema.id, schema.target.column}
    problems += [
        Problem(str(name), "only the schema's columns")
        for name in frame.columns
        if name not in known
    ]
    for name, feature in schema.features.items():
        if name in frame.columns:
            problems += _column_problems(frame, name, feature, schema)
    return problems


def _line(problem: Problem, rows: int) -> str:
    if problem.bad_rows is None:
        if problem.rule == "column listed in the schema":
            return f"{problem.column}: missing column (the schema lists it)"
        return f"{problem.column}: unexpected column (not in the schema)"
    verb = "fails" if problem.bad_rows == 1 else "fail"
    line = (
        f"{problem.column}: expected {problem.rule}; {problem.bad_rows:,} of {rows:,} rows {verb}"
    )
    if problem.examples:
        line += ", e.g. " + ", ".join(repr(v) for v in problem.examples)
    if problem.where:
        line += f" ({problem.where_kind} {', '.join(str(v) for v in problem.where)})"
    return line


def describe(problems: list[Problem], rows: int, source: str) -> str:
    """A readable account of the problems: one line per broken rule and what to do next.

    Args:
        problems: What :func:`check_table` found (non-empty).
        rows: Number of rows of the table.
        source: The table's name in the message (its path).
    """
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    return "\n".join(
        [
            f"{source}: {count} in {rows:,} rows; nothing was scored:",
            *(f"  - {_line(problem, rows)}" for problem in problems),
            "Fix or remove those rows and score again. If the values are right (a new category, "
            "a wider range), change the schema and retrain: the model has never seen them.",
        ]
    )


def outputs(frame: pd.DataFrame, schema: Schema, model: LoadedModel) -> np.ndarray:
    """The model's output on checked raw rows: the pipeline's encoding, one call.

    Binary: the positive-class probability; multiclass: a probability per class (rows x
    classes); regression: the value (:meth:`pipelines.serving.scoring.Scorer.output`).

    Raises:
        ScoreError: The schema is of another task, or no longer produces the features the model
            was trained on.
    """
    if model.task != schema.target.task:
        raise ScoreError(
            f"the model is {model.task} but the schema says {schema.target.task}: score with "
            "the schema the model was trained with"
        )
    x = encode(frame, schema)
    features: list[str] = model.meta["features"]
    missing = [name for name in features if name not in x.columns]
    if missing:
        raise ScoreError(
            f"the model was trained on features the schema no longer produces "
            f"({', '.join(missing[:MAX_EXAMPLES])}): retrain it with `dvc repro`"
        )
    # A float32 matrix in the model's column order: XGBoost scores it in place, as the service does.
    return Scorer.of(model).output(x[features].to_numpy(dtype=np.float32))


def probabilities(frame: pd.DataFrame, schema: Schema, model: LoadedModel) -> np.ndarray:
    """Positive-class probability of each checked raw row, by a binary classifier.

    Raises:
        ScoreError: The model is not a binary classifier, or the schema no longer produces its
            features.
    """
    if model.task != "binary":
        raise ScoreError(f"a {model.task} model gives no positive-class probability")
    return outputs(frame, schema, model)


def columns(
    output: np.ndarray, schema: Schema, model: LoadedModel, threshold: float | None = None
) -> dict[str, np.ndarray]:
    """The output's columns for the model's task (see the module's docstring), by name.

    Args:
        output: :func:`outputs` of some rows.
        schema: The feature schema (its target's classes name a classifier's labels).
        model: The model that gave ``output`` (a regression's interval is in its metadata).
        threshold: A binary classifier's probability at or above which the label is positive
            (default: the model's own, as trained).
    """
    target = schema.target
    if model.task == "regression":
        width = model.half_width()
        return {PREDICTION: output, LOW: output - width, HIGH: output + width}
    if model.task == "multiclass":
        classes = np.asarray(target.labels, dtype=object)
        gain = model.gain  # a model that decides by value: the class of highest expected gain
        labels = {LABEL: classes[decided_classes(output, gain)]}
        return labels | {f"{PROBABILITY_OF}{c}": output[:, k] for k, c in enumerate(target.labels)}
    threshold = model.threshold if threshold is None else threshold
    positive: Any = target.positive
    negative = next(value for value in target.labels if value != positive)
    return {PROBABILITY: output, LABEL: np.where(output >= threshold, positive, negative)}


def score(
    frame: pd.DataFrame, schema: Schema, model: LoadedModel, threshold: float | None = None
) -> pd.DataFrame:
    """Score checked raw rows: the id column (when present), then the task's columns.

    Args:
        frame: Rows that :func:`check_table` accepts.
        schema: The feature schema.
        model: The model, as :func:`pipelines.core.model.load_model` returns it.
        threshold: A binary classifier's threshold (default: the model's own).

    Returns:
        One row per input row, same order and index.
    """
    output = outputs(frame, schema, model)
    out = pd.DataFrame(columns(output, schema, model, threshold), index=frame.index)
    if schema.id in frame.columns:
        out.insert(0, schema.id, frame[schema.id])
    return out


def read_table(path: Path) -> pd.DataFrame:
    """Read a table to score as the pipeline reads the raw table.

    Raises:
        ScoreError: The file is missing, empty or not a CSV table.
    """
    try:
        frame = read_raw(path)
    except FileNotFoundError:
        raise ScoreError(f"{path} does not exist: give the path of a CSV table") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ScoreError(f"{path} is not a CSV table ({reason})") from None
    if frame.empty:
        raise ScoreError(f"{path} has no rows to score")
    return frame


def score_file(
    source: Path, target: Path, schema: Schema, model: LoadedModel, threshold: float | None = None
) -> int:
    """Read, check, score and write one table; the output is written atomically.

    Returns:
        The number of rows scored.

    Raises:
        ScoreError: The table cannot be read or breaks the schema (nothing is written).
    """
    frame = read_table(source)
    problems = check_table(frame, schema)
    if problems:
        raise ScoreError(describe(problems, len(frame), str(source)))
    scored = score(frame, schema, model, threshold)
    write_atomically(target, functools.partial(scored.to_csv, index=False))
    return len(scored)


def main(argv: list[str] | None = None) -> int:
    """Score INPUT with the current model and write OUTPUT."""
    paths = load_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="CSV table of raw rows (the raw table's columns)")
    parser.add_argument("output", type=Path, help="CSV file to write: id and the task's columns")
    parser.add_argument("--model", type=Path, default=paths.model, help="model directory")
    parser.add_argument("--schema", type=Path, default=paths.schema_, help="feature schema")
    args = parser.parse_args(argv)
    if args.output.resolve() == args.input.resolve():
        raise ScoreError(f"{args.output} is the input table: write the scores to another file")

    schema = load_schema(args.schema)
    model = load_model(args.model)
    rows = score_file(args.input, args.output, schema, model)
    said = {
        "binary": f"label {schema.target.positive!r} at probability >= {model.threshold:g}",
        "multiclass": "label: the most probable class"
        + (" by expected gain (value:)" if model.gain is not None else ""),
        "regression": f"interval: prediction -/+ {model.half_width():g}",
    }
    print(f"wrote {args.output}: {rows:,} rows scored ({said[model.task]})")
    return 0


if __name__ == "__main__":
    run_stage(main)
