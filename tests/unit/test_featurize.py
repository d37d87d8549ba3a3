"""The schema-derived encoding, the labels and the stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.schema import Feature, Rows, Schema, Target
from pipelines.stages.featurize import (
    ID,
    LABEL,
    encode,
    feature_names,
    featurize,
    labels,
    read_features,
    split,
)

CONTRACTS = ("Month-to-month", "One year", "Two year")


def make_schema(positive: str | int = "Yes", values: tuple = ("No", "Yes")) -> Schema:
    return Schema(
        target=Target(column="churn", positive=positive, values=values),
        id="rownames",
        rows=Rows(min=1, max=100_000),
        features={
            "tenure": Feature(type="integer", min=0, max=100),
            "contract": Feature(type="category", categories=CONTRACTS),
            "charges": Feature(type="number", min=0, max=200, max_null_fraction=0.5),
            "senior": Feature(type="integer", min=0, max=1),
        },
    )


SCHEMA = make_schema()
NAMES = [
    "tenure",
    "contract=Month-to-month",
    "contract=One year",
    "contract=Two year",
    "charges",
    "senior",
]


def raw_rows() -> pd.DataFrame:
    """Raw rows as validation passes them on: any column order, a target, an id, an extra."""
    return pd.DataFrame(
        {
            "churn": ["Yes", "No", "No", "Yes"],
            "senior": [0, 1, 0, 1],
            "charges": [29.85, np.nan, 104.5, 0.0],
            "rownames": [101, 102, 103, 104],
            "contract": ["One year", "Month-to-month", "Two year", "Month-to-month"],
            "tenure": [1, 34, 72, 0],
            "note": ["a", "b", "c", "d"],
        },
        index=[7, 3, 9, 1],
    )


def synthetic(rows: int = 1000, positive_rate: float = 0.23, seed: int = 0) -> pd.DataFrame:
    """A raw table with a known positive rate, ids in shuffled order."""
    rng = np.random.default_rng(seed)
    positives = round(rows * positive_rate)
    churn = np.array(["Yes"] * positives + ["No"] * (rows - positives))
    rng.shuffle(churn)
    return pd.DataFrame(
        {
            "rownames": rng.permutation(np.arange(1, rows + 1)),
            "churn": churn,
            "tenure": rng.integers(0, 72, rows),
            "contract": rng.choice(CONTRACTS, rows),
            "charges": rng.uniform(18, 120, rows).round(2),
            "senior": rng.integers(0, 2, rows),
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
    for dropped in ("rownames", "churn", "note"):
        assert dropped not in encoded.columns


def test_encode_numeric_passthrough_keeps_missing() -> None:
    encoded = encode(raw_rows(), SCHEMA)

    np.testing.assert_array_equal(encoded["tenure"], np.float32([1, 34, 72, 0]))
    np.testing.assert_array_equal(encoded["senior"], np.float32([0, 1, 0, 1]))
    np.testing.assert_array_equal(encoded["charges"], np.float32([29.85, np.nan, 104.5, 0.0]))
    assert encoded["charges"].isna().tolist() == [False, True, False, False]


def test_encode_one_hot_has_exactly_one_one_per_row() -> None:
    frame = raw_rows()
    one_hot = encode(frame, SCHEMA)[[f"contract={c}" for c in CONTRACTS]]

    assert set(np.unique(one_hot.to_numpy())) == {0.0, 1.0}
    assert (one_hot.sum(axis=1) == 1).all()
    chosen = one_hot.idxmax(axis=1).str.removeprefix("contract=")
    assert chosen.tolist() == frame["contract"].tolist()


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
        (SCHEMA, ["Yes", "No", "No", "Yes"], [1, 0, 0, 1]),
        (make_schema(positive="No"), ["Yes", "No", "No", "Yes"], [0, 1, 1, 0]),
        (make_schema(positive=1, values=(0, 1)), [1, 0, 0, 1], [1, 0, 0, 1]),
        (make_schema(positive=0, values=(0, 1)), [1, 0, 0, 1], [0, 1, 1, 0]),
    ],
)
def test_labels(schema: Schema, values: list[object], expected: list[int]) -> None:
    y = labels(raw_rows().assign(churn=values), schema)
    assert y.dtype == np.int8
    assert y.tolist() == expected


@pytest.mark.parametrize(
    ("test_size", "seed"), [(0.2, 42), (0.2, 0), (0.35, 1), (0.35, 2), (0.1, 3)]
)
def test_split_is_stratified_disjoint_and_complete(test_size: float, seed: int) -> None:
    frame = synthetic()
    train, test = split(frame, SCHEMA, test_size=test_size, seed=seed)

    assert len(test) == pytest.approx(test_size * len(frame), abs=1)
    assert len(train) + len(test) == len(frame)
    assert set(train["rownames"]).isdisjoint(test["rownames"])
    assert set(train["rownames"]) | set(test["rownames"]) == set(frame["rownames"])
    positives = (frame["churn"] == "Yes").sum()
    # stratified: the test part holds its share of the positives to within one row
    assert (test["churn"] == "Yes").sum() == pytest.approx(test_size * positives, abs=1)
    overall = positives / len(frame)
    for part in (train, test):
        assert abs((part["churn"] == "Yes").mean() - overall) < 0.01
        assert part["rownames"].is_monotonic_increasing
        # rows are whole: every row is the original row with that index
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def test_split_is_reproducible_for_a_seed() -> None:
    frame = synthetic()
    first = split(frame, SCHEMA, test_size=0.2, seed=42)
    again = split(frame, SCHEMA, test_size=0.2, seed=42)
    other = split(frame, SCHEMA, test_size=0.2, seed=43)

    for a, b in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert set(first[1]["rownames"]) != set(other[1]["rownames"])


def test_featurize_table_layout() -> None:
    frame = raw_rows()
    table = featurize(frame, SCHEMA)

    assert list(table.columns) == [ID, LABEL, *NAMES]
    assert table[ID].tolist() == frame["rownames"].tolist()
    assert table[LABEL].tolist() == [1, 0, 0, 1]
    assert table.index.equals(pd.RangeIndex(len(frame)))


def test_featurize_round_trips_through_parquet(tmp_path: Path) -> None:
    frame = raw_rows()
    path = tmp_path / "train.parquet"
    featurize(frame, SCHEMA).to_parquet(path, index=False)

    x, y, ids = read_features(path)

    pd.testing.assert_frame_equal(x, encode(frame, SCHEMA).reset_index(drop=True))
    np.testing.assert_array_equal(y, labels(frame, SCHEMA))
    np.testing.assert_array_equal(ids, frame["rownames"].to_numpy())
