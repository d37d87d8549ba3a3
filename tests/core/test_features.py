"""The schema-derived encoding, the labels and the split by a hash of the id.

Small inline tables with awkward column names (spaces, dots, capitals, dashes, non-ASCII
letters), as a new table may have, then the project's own table and schema.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.features import (
    ID,
    LABEL,
    encode,
    feature_names,
    featurize,
    in_test,
    labels,
    read_features,
    split,
)
from pipelines.params import FeaturizeParams, load_section
from pipelines.schema import Feature, Rows, Schema, Target
from tests.support.columns import PARAMS

TARGET = "Loan Status"
ROW_ID = "row-id"
PLANS = ("Monthly", "Yearly", "Biennial")
PLAN = "plan.type"
UNITS = "Ünits-Held"
INCOME = "Monthly Income"
FLAG = "is senior"


def make_schema(positive: str | int = "bad", values: tuple = ("good", "bad")) -> Schema:
    return Schema(
        target=Target(column=TARGET, positive=positive, values=values),
        id=ROW_ID,
        rows=Rows(min=1, max=100_000),
        features={
            UNITS: Feature(type="integer", min=0, max=100),
            PLAN: Feature(type="category", categories=PLANS),
            INCOME: Feature(type="number", min=0, max=200, max_null_fraction=0.5),
            FLAG: Feature(type="integer", min=0, max=1),
        },
    )


SCHEMA = make_schema()
NAMES = [
    UNITS,
    f"{PLAN}=Monthly",
    f"{PLAN}=Yearly",
    f"{PLAN}=Biennial",
    INCOME,
    FLAG,
]


def raw_rows() -> pd.DataFrame:
    """Raw rows as validation passes them on: any column order, a target, an id, an extra."""
    return pd.DataFrame(
        {
            TARGET: ["bad", "good", "good", "bad"],
            FLAG: [0, 1, 0, 1],
            INCOME: [29.85, np.nan, 104.5, 0.0],
            ROW_ID: [101, 102, 103, 104],
            PLAN: ["Yearly", "Monthly", "Biennial", "Monthly"],
            UNITS: [1, 34, 72, 0],
            "note": ["a", "b", "c", "d"],
        },
        index=[7, 3, 9, 1],
    )


def synthetic(rows: int = 1000, positive_rate: float = 0.23, seed: int = 0) -> pd.DataFrame:
    """A raw table with a known positive rate, ids in shuffled order."""
    rng = np.random.default_rng(seed)
    positives = round(rows * positive_rate)
    target = np.array(["bad"] * positives + ["good"] * (rows - positives))
    rng.shuffle(target)
    return pd.DataFrame(
        {
            ROW_ID: rng.permutation(np.arange(1, rows + 1)),
            TARGET: target,
            UNITS: rng.integers(0, 72, rows),
            PLAN: rng.choice(PLANS, rows),
            INCOME: rng.uniform(18, 120, rows).round(2),
            FLAG: rng.integers(0, 2, rows),
        }
    )


def test_feature_names_follow_schema_order_with_one_hot_names() -> None:
    assert feature_names(SCHEMA) == NAMES


def test_encode_columns_dtype_and_index() -> None:
    frame = raw_rows()
    encoded = encode(frame, SCHEMA)

    assert list(encoded.columns) == NAMES
    assert (encoded.dtypes == np.float32).all()
    assert encoded.index.equals(frame.index)
    for dropped in (ROW_ID, TARGET, "note"):
        assert dropped not in encoded.columns


def test_encode_numeric_passthrough_keeps_missing() -> None:
    encoded = encode(raw_rows(), SCHEMA)

    np.testing.assert_array_equal(encoded[UNITS], np.float32([1, 34, 72, 0]))
    np.testing.assert_array_equal(encoded[FLAG], np.float32([0, 1, 0, 1]))
    np.testing.assert_array_equal(encoded[INCOME], np.float32([29.85, np.nan, 104.5, 0.0]))
    assert encoded[INCOME].isna().tolist() == [False, True, False, False]


def test_encode_one_hot_has_exactly_one_one_per_row() -> None:
    frame = raw_rows()
    one_hot = encode(frame, SCHEMA)[[f"{PLAN}={c}" for c in PLANS]]

    assert set(np.unique(one_hot.to_numpy())) == {0.0, 1.0}
    assert (one_hot.sum(axis=1) == 1).all()
    chosen = one_hot.idxmax(axis=1).str.removeprefix(f"{PLAN}=")
    assert chosen.tolist() == frame[PLAN].tolist()


def test_encode_does_not_depend_on_other_rows() -> None:
    """Serving encodes one record at a time: it must get the row it would get in a batch."""
    frame = raw_rows()
    batch = encode(frame, SCHEMA)
    for label in frame.index:
        alone = encode(frame.loc[[label]], SCHEMA)
        pd.testing.assert_frame_equal(alone, batch.loc[[label]])


@pytest.mark.parametrize(
    ("schema", "values", "expected"),
    [
        (SCHEMA, ["bad", "good", "good", "bad"], [1, 0, 0, 1]),
        (make_schema(positive="good"), ["bad", "good", "good", "bad"], [0, 1, 1, 0]),
        (make_schema(positive=1, values=(0, 1)), [1, 0, 0, 1], [1, 0, 0, 1]),
        (make_schema(positive=0, values=(0, 1)), [1, 0, 0, 1], [0, 1, 1, 0]),
    ],
)
def test_labels(schema: Schema, values: list[object], expected: list[int]) -> None:
    y = labels(raw_rows().assign(**{TARGET: values}), schema)
    assert y.dtype == np.int8
    assert y.tolist() == expected


def test_labels_of_a_multiclass_and_a_regression_target() -> None:
    classes = Target(column=TARGET, task="multiclass", classes=("c", "a", "b"))
    y = labels(raw_rows().assign(**{TARGET: ["b", "c", "a", "b"]}), with_target(classes))
    assert y.tolist() == [2, 0, 1, 2]  # positions in the schema's order, not sorted
    number = Target(column=TARGET, task="regression")
    y = labels(raw_rows().assign(**{TARGET: [1.5, -2, 0, 1e3]}), with_target(number))
    assert y.dtype == np.float64
    assert y.tolist() == [1.5, -2.0, 0.0, 1000.0]


def with_target(target: Target) -> Schema:
    return SCHEMA.model_copy(update={"target": target})


@pytest.mark.parametrize(
    ("test_size", "seed"), [(0.2, 42), (0.2, 0), (0.35, 1), (0.35, 2), (0.1, 3)]
)
def test_split_is_disjoint_complete_and_near_its_share(test_size: float, seed: int) -> None:
    frame = synthetic(rows=4000)
    train, test = split(frame, SCHEMA, test_size=test_size, seed=seed)

    # binomial: 4 standard deviations of the test share on 4,000 rows
    assert abs(len(test) / len(frame) - test_size) < 4 * math.sqrt(test_size * 0.9 / len(frame))
    assert len(train) + len(test) == len(frame)
    assert set(train[ROW_ID]).isdisjoint(test[ROW_ID])
    assert set(train[ROW_ID]) | set(test[ROW_ID]) == set(frame[ROW_ID])
    overall = (frame[TARGET] == "bad").mean()
    for part in (train, test):
        assert abs((part[TARGET] == "bad").mean() - overall) < 0.05  # not stratified, but close
        assert part[ROW_ID].is_monotonic_increasing
        # rows are whole: every row is the original row with that index
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def test_a_rows_side_depends_on_its_id_alone() -> None:
    frame = synthetic()
    _, test = split(frame, SCHEMA, test_size=0.2, seed=42)
    # Another order, a part of the table, rows added: every row stays on its side
    shuffled = frame.sample(frac=1.0, random_state=1)
    part = frame.iloc[::3]
    grown = pd.concat([frame, synthetic(rows=500, seed=9).assign(**{ROW_ID: range(5000, 5500)})])
    for other in (shuffled, part, grown):
        _, other_test = split(other, SCHEMA, test_size=0.2, seed=42)
        assert set(other_test[ROW_ID]) & set(frame[ROW_ID]) == set(test[ROW_ID]) & set(
            other[ROW_ID]
        )
    # An id read as text lands where the same id read as a number does
    ids = frame[ROW_ID]
    assert (in_test(ids, 0.2, 42) == in_test(ids.astype(str), 0.2, 42)).all()


def test_split_is_reproducible_for_a_seed() -> None:
    frame = synthetic()
    first = split(frame, SCHEMA, test_size=0.2, seed=42)
    again = split(frame, SCHEMA, test_size=0.2, seed=42)
    other = split(frame, SCHEMA, test_size=0.2, seed=43)

    for a, b in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert set(first[1][ROW_ID]) != set(other[1][ROW_ID])


def test_featurize_table_layout() -> None:
    frame = raw_rows()
    table = featurize(frame, SCHEMA)

    assert list(table.columns) == [ID, LABEL, *NAMES]
    assert table[ID].tolist() == frame[ROW_ID].tolist()
    assert table[LABEL].tolist() == [1, 0, 0, 1]
    assert table.index.equals(pd.RangeIndex(len(frame)))


def test_featurize_round_trips_through_parquet(tmp_path: Path) -> None:
    frame = raw_rows()
    path = tmp_path / "train.parquet"
    featurize(frame, SCHEMA).to_parquet(path, index=False)

    x, y, ids = read_features(path)

    pd.testing.assert_frame_equal(x, encode(frame, SCHEMA).reset_index(drop=True))
    np.testing.assert_array_equal(y, labels(frame, SCHEMA))
    np.testing.assert_array_equal(ids, frame[ROW_ID].to_numpy())


# --- the project's own table ------------------------------------------------------------------


def test_the_real_table_encodes_as_its_schema_says(raw: pd.DataFrame, schema: Schema) -> None:
    encoded = encode(raw, schema)
    assert list(encoded.columns) == feature_names(schema)
    assert (encoded.dtypes == np.float32).all()
    for name, feature in schema.features.items():
        if feature.type == "category":
            one_hot = encoded[[f"{name}={c}" for c in feature.categories or ()]]
            # one 1 per row with a value, none for a missing value
            assert (one_hot.sum(axis=1) == raw[name].notna()).all(), name
        else:
            expected = pd.to_numeric(raw[name]).to_numpy(dtype=np.float32, na_value=np.nan)
            np.testing.assert_array_equal(encoded[name].to_numpy(), expected, err_msg=name)


def test_the_real_table_splits_by_params(raw: pd.DataFrame, schema: Schema) -> None:
    params = load_section("featurize", FeaturizeParams, PARAMS)
    train, test = split(raw, schema, params.test_size, params.seed)

    # A hash split: the test share and its positive rate are binomial draws (4 deviations)
    share = params.test_size
    assert abs(len(test) / len(raw) - share) <= 4 * math.sqrt(share * (1 - share) / len(raw))
    assert len(train) + len(test) == len(raw)
    assert set(train[schema.id]).isdisjoint(test[schema.id])
    # Not stratified, but the test rows' target is a draw of the table's (4 deviations): each
    # class's share (a binary target's positive rate among them), or a regression's mean
    target, column = schema.target, schema.target.column
    if target.task == "regression":
        values = pd.to_numeric(raw[column])
        spread = 4 * values.std() / math.sqrt(len(test))
        assert abs(pd.to_numeric(test[column]).mean() - values.mean()) <= spread
        return
    for value in target.labels:  # matched as text, as the labels are
        rate = (raw[column].astype(str) == str(value)).mean()
        share = (test[column].astype(str) == str(value)).mean()
        assert abs(share - rate) <= 4 * math.sqrt(rate * (1 - rate) / len(test)), value
