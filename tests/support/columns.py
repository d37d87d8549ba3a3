"""Columns of the project's schema picked by kind, and values that keep or break its rules.

Generic tests never name a column of the example table: they ask for "the first integer feature
with a range" or "a nullable feature" and take values from the schema (categories, bounds) or
from the data, so the same tests check any table a new model brings. Column names may hold
spaces, dots, capitals, dashes or non-ASCII letters: use them as dictionary keys
(``frame[name]``, ``**{name: value}``), never as identifiers or in ``DataFrame.query`` strings.

When the schema has no column of the kind a case needs, :func:`case` gives a skipped case that
says which kind is missing; every other case runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from _pytest.mark import ParameterSet

from pipelines.params import load_paths
from pipelines.schema import Feature, Schema, load_schema

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"

Kind = Literal["integer", "number", "category"]
NUMERIC: tuple[Kind, ...] = ("integer", "number")

# A column name no table is likely to have, awkward on purpose (space, dot, non-ASCII letter).
UNKNOWN_COLUMN = "not a feature (ü.1)"


@functools.cache
def project_schema() -> Schema:
    """The committed schema, for parametrizing tests when they are collected."""
    return load_schema(ROOT / load_paths(PARAMS).schema_)


def pick(
    schema: Schema,
    *kinds: Kind,
    low: bool = False,
    high: bool = False,
    nullable: bool | None = None,
) -> str | None:
    """The first feature of one of ``kinds`` (any kind when none is given) that fits.

    Args:
        schema: The feature schema.
        kinds: Feature types to choose from.
        low: Only a feature with a lower bound.
        high: Only a feature with an upper bound.
        nullable: Only a feature that allows missing values (True) or does not (False).

    Returns:
        The feature's name, or None when the schema has none that fits.
    """
    for name, feature in schema.features.items():
        if kinds and feature.type not in kinds:
            continue
        if (low and feature.min is None) or (high and feature.max is None):
            continue
        if nullable is not None and feature.nullable != nullable:
            continue
        return name
    return None


def describe(
    *kinds: Kind, low: bool = False, high: bool = False, nullable: bool | None = None
) -> str:
    """Words for what :func:`pick` looks for, for the reason of a skipped case."""
    what = " or ".join(kinds) if kinds else "any"
    words = [] if nullable is None else ["nullable" if nullable else "non-nullable"]
    words.append(f"{what} feature")
    if low or high:
        words.append("with a " + " and ".join(["lower"] * low + ["upper"] * high) + " bound")
    return " ".join(words)


def case(
    schema: Schema,
    case_id: str,
    *kinds: Kind,
    low: bool = False,
    high: bool = False,
    nullable: bool | None = None,
    value: Callable[[Feature], object] = lambda feature: None,
) -> ParameterSet:
    """A case ``(column, value)`` on the first feature of a kind, the value made from it.

    When the schema has no such feature the case is ``(None, None)``, skipped with a reason that
    says which kind is missing.
    """
    name = pick(schema, *kinds, low=low, high=high, nullable=nullable)
    if name is None:
        wanted = describe(*kinds, low=low, high=high, nullable=nullable)
        skip = pytest.mark.skip(reason=f"the schema has no {wanted}")
        return pytest.param(None, None, id=case_id, marks=skip)
    return pytest.param(name, value(schema.features[name]), id=case_id)


def unknown_category(feature: Feature) -> str:
    """Text that is not one of the feature's categories."""
    value = "not a category"
    while value in (feature.categories or ()):
        value += "!"
    return value


def whole(value: float, feature: Feature) -> float | int:
    """``value`` as an int for an integer feature, as a float otherwise."""
    return int(value) if feature.type == "integer" else float(value)


def above(feature: Feature) -> float | int:
    """A value just above the feature's upper bound (by one unit)."""
    assert feature.max is not None
    return whole(feature.max + 1, feature)


def below(feature: Feature) -> float | int:
    """A value just below the feature's lower bound (by one unit)."""
    assert feature.min is not None
    return whole(feature.min - 1, feature)


def inside(feature: Feature) -> float | int:
    """A whole value within the feature's range (its lower bound when it has one)."""
    if feature.min is not None:
        return whole(feature.min, feature)
    return whole(feature.max if feature.max is not None else 0, feature)


def fraction(feature: Feature) -> float:
    """A value with a fraction, within the range when the range allows one (integers refuse it)."""
    low = feature.min if feature.min is not None else 0.0
    high = feature.max if feature.max is not None else low + 1
    return low + 0.5 if high - low >= 1 else low + (high - low) / 2


def breaking(feature: Feature) -> object:
    """A value that breaks the feature's rules without changing its column's kind."""
    if feature.type == "category":
        return unknown_category(feature)
    if feature.max is not None:
        return above(feature)
    if feature.min is not None:
        return below(feature)
    return "not a number"


def negative_class(schema: Schema) -> str | int:
    """A binary target's value that is not the positive class."""
    (negative,) = [value for value in schema.target.labels if value != schema.target.positive]
    return negative


def new_ids(ids: Any, count: int) -> list[str]:
    """Ids a table's id column (a pandas Series) does not have yet, numbers when its are."""
    if ids.dtype.kind in "iu":
        return [str(int(ids.max()) + 1 + i) for i in range(count)]
    return [f"served-{i}" for i in range(count)]
