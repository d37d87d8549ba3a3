"""The training-table refresh (pipelines/monitoring/refresh) on small frames from the schema.

The raw rows hold one value of the target and the late labels another, in the task's own terms
(a class, a number; :mod:`tests.support.targets`): a new row must take its label's value.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipelines.monitoring.refresh import ID_RULE, RefreshError, refresh
from pipelines.schema import Schema
from tests.support.columns import (
    above,
    below,
    case,
    fraction,
    inside,
    project_schema,
    unknown_category,
)
from tests.support.targets import Value, known, late
from tests.support.targets import labels as label_series

SCHEMA = project_schema()


def valid(schema: Schema) -> dict[str, object]:
    """One row of feature (and audit column) values that every rule of the schema accepts."""
    return {
        name: (feature.categories or ("",))[0] if feature.type == "category" else inside(feature)
        for name, feature in schema.checked.items()
    }


def raw_table(schema: Schema, rows: int = 5) -> pd.DataFrame:
    frame = pd.DataFrame([valid(schema)] * rows)
    frame.insert(0, schema.id, np.arange(1, rows + 1))
    frame.insert(1, schema.target.column, known(schema.target).data)  # not where the schema has it
    return frame


def served(schema: Schema, ids: list[str], **column: list[object]) -> pd.DataFrame:
    frame = pd.DataFrame([valid(schema)] * len(ids))
    for name, values in column.items():
        frame[name] = pd.Series(values, dtype=object)
    return frame


def labels(ids: list[str], value: Value | None = None) -> pd.Series:
    """Late labels of ``ids`` in the model's terms: ``value``, else :func:`late`'s."""
    return label_series(SCHEMA.target, ids, value or late(SCHEMA.target))


def test_labelled_rows_are_added_in_the_schema_columns_order() -> None:
    schema = SCHEMA
    raw = raw_table(schema)
    ids = ["101", "102", "103"]
    done = refresh(raw, served(schema, ids), np.array(ids, dtype=object), labels(ids[:2]), schema)
    assert list(done.table.columns) == list(raw.columns)
    assert len(done.table) == len(raw) + 2  # the unlabelled row is no training data
    new = done.table.iloc[len(raw) :]
    assert new[schema.id].tolist() == [101, 102]
    assert (new[schema.target.column] == late(schema.target).data).all()
    assert done.table.iloc[: len(raw)].equals(raw)  # raw rows untouched
    assert (done.labelled, done.added, done.replaced, done.dropped) == (2, 2, 0, {})
    assert "1 without one are not training data" in done.lines()[0]


def test_a_served_row_replaces_the_raw_row_of_its_id_and_the_last_duplicate_wins() -> None:
    schema = SCHEMA
    raw = raw_table(schema)
    ids = ["2", "7", "7"]
    given = served(schema, ids)
    target = schema.target
    y = label_series(target, ["2", "7"], [late(target), known(target)])
    done = refresh(raw, given, np.array(ids, dtype=object), y, schema)
    assert (done.replaced, done.duplicates, done.added) == (1, 1, 1)
    assert len(done.table) == len(raw) + 1
    assert done.table[schema.id].is_unique
    row = done.table.set_index(schema.id).loc[2]
    assert row[schema.target.column] == late(target).data  # the late label, not the raw one


BROKEN = [
    case(SCHEMA, "above max", "integer", "number", high=True, value=above),
    case(SCHEMA, "below min", "integer", "number", low=True, value=below),
    case(SCHEMA, "unknown category", "category", value=unknown_category),
    case(SCHEMA, "missing", nullable=False, value=lambda f: None),
    case(SCHEMA, "fraction in an integer", "integer", value=fraction),
    case(SCHEMA, "text in a number", "integer", "number", value=lambda f: "not a number"),
]


@pytest.mark.parametrize(("column", "value"), BROKEN)
def test_a_row_that_breaks_the_schema_is_dropped_and_counted(column: str, value: object) -> None:
    schema = SCHEMA
    ids = ["101", "102"]
    given = served(schema, ids, **{column: [value, valid(schema)[column]]})
    done = refresh(raw_table(schema), given, np.array(ids, dtype=object), labels(ids), schema)
    assert done.added == 1
    assert 101 not in set(done.table[schema.id])
    ((where, rule),) = done.dropped
    assert where == column, done.dropped
    assert done.dropped[(where, rule)] == 1
    assert f"  - {column}: {rule}: 1" in done.lines()


def test_an_id_that_is_not_of_the_raw_id_type_is_dropped() -> None:
    schema = SCHEMA
    ids = ["abc", "102"]
    done = refresh(
        raw_table(schema), served(schema, ids), np.array(ids, dtype=object), labels(ids), schema
    )
    assert done.dropped == {ID_RULE: 1}
    assert done.added == 1


def with_null_fraction(schema: Schema, column: str, share: float | None) -> Schema:
    """``schema`` with ``column``'s max_null_fraction set to ``share`` (None: as it is)."""
    if share is None:
        return schema
    feature = schema.features[column].model_copy(update={"max_null_fraction": share})
    return schema.model_copy(update={"features": schema.features | {column: feature}})


# The schema's own fraction, and fractions where rounding the room for new nulls down from
# ``share * rows`` (rows before dropping) would let the table end above its fraction
@pytest.mark.parametrize("share", [None, 0.11, 0.3, 0.45])
@pytest.mark.parametrize(("column", "value"), [case(SCHEMA, "nullable", nullable=True)])
def test_new_missing_values_beyond_the_null_fraction_are_dropped(
    column: str, value: None, share: float | None
) -> None:
    schema = with_null_fraction(SCHEMA, column, share)
    share = schema.features[column].max_null_fraction
    raw = raw_table(schema, rows=int(np.ceil(3 / share)))  # room for about 3 missing values
    ids = [str(10**6 + i) for i in range(10)]
    given = served(schema, ids, **{column: [value] * 10})
    done = refresh(raw, given, np.array(ids, dtype=object), labels(ids), schema)
    assert 0 < done.added < 10
    assert done.table[column].isna().mean() <= share
    ((where, rule),) = done.dropped
    assert (where, done.dropped[(where, rule)]) == (column, 10 - done.added)
    assert "max_null_fraction" in rule


def test_rows_without_labels_stop_the_refresh() -> None:
    ids = ["101"]
    with pytest.raises(RefreshError, match="none of the 1 served rows has a label"):
        refresh(raw_table(SCHEMA), served(SCHEMA, ids), np.array(ids), labels(["999"]), SCHEMA)


def test_when_every_labelled_row_breaks_the_schema_nothing_is_recorded() -> None:
    name, feature = next(iter(SCHEMA.features.items()))
    bad = unknown_category(feature) if feature.type == "category" else "not a number"
    ids = ["101", "102"]
    with pytest.raises(
        RefreshError, match=rf"all 2 labelled rows break schema\.yaml \({re.escape(name)}"
    ):
        refresh(
            raw_table(SCHEMA),
            served(SCHEMA, ids, **{name: [bad, bad]}),
            np.array(ids, dtype=object),
            labels(ids),
            SCHEMA,
        )


def test_a_table_beyond_rows_max_stops_the_refresh() -> None:
    schema = SCHEMA.model_copy(update={"rows": SCHEMA.rows.model_copy(update={"max": 6})})
    ids = ["101", "102"]
    with pytest.raises(RefreshError, match=r"above rows\.max 6"):
        refresh(
            raw_table(schema), served(schema, ids), np.array(ids, dtype=object), labels(ids), schema
        )
