"""The schema's target in its task's terms: values a table holds, late labels, binary-only skips.

Generic tests that need a target value take it from here, so that they run in a repository of any
task: a binary target's two classes, a multiclass target's classes, a regression's numbers. A
value comes in two forms: the data's own (what the raw table and a late-labels file hold) and the
model's (what :func:`pipelines.monitoring.served.read_labels` gives: 1/0 for a binary target's
positive/other class, a class's position, a number).

What only a binary model has (a positive class, a threshold, the holdout rescoring) is skipped on
other tasks with a reason that starts with :data:`NOT_BINARY`, which the CI accepts as a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from pipelines.schema import Schema, Target

NOT_BINARY = "the schema has no binary target"
# The dtype of read_labels' values for each task
LABEL_DTYPES = {"binary": np.int8, "multiclass": np.int16, "regression": np.float64}


def binary_only(schema: Schema, what: str) -> pytest.MarkDecorator:
    """Skip a test of ``what`` (something only a binary model has) on a schema of another task."""
    task = schema.target.task
    return pytest.mark.skipif(task != "binary", reason=f"{NOT_BINARY} (its task is {task}): {what}")


@dataclass(frozen=True)
class Value:
    """One target value, in the model's terms and in the data's."""

    model: int | float
    data: str | int | float


def known(target: Target) -> Value:
    """A value the raw table holds: a binary target's other class, the first class, a number."""
    if target.task == "regression":
        return Value(1.5, 1.5)
    if target.task == "multiclass":
        return Value(0, target.labels[0])
    (negative,) = [v for v in target.labels if v != target.positive]
    return Value(0, negative)


def late(target: Target) -> Value:
    """A late label unlike :func:`known`: the positive class, the last class, another number."""
    if target.task == "regression":
        return Value(2.5, 2.5)
    if target.task == "multiclass":
        return Value(len(target.labels) - 1, target.labels[-1])
    assert target.positive is not None
    return Value(1, target.positive)


def labels(target: Target, ids: Sequence[str], values: Value | Sequence[Value]) -> pd.Series:
    """Late labels as :func:`pipelines.monitoring.served.read_labels` gives them, by id."""
    each = [values] * len(ids) if isinstance(values, Value) else list(values)
    return pd.Series(
        np.array([v.model for v in each], dtype=LABEL_DTYPES[target.task]),
        index=pd.Index(list(ids), dtype=object),
    )
