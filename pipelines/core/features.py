"""The model's features: the id and label columns, the train/test split, the schema's encoding.

A row's side of the split depends on its id and ``featurize.seed`` alone (:func:`in_test`), not
on the other rows or their order: the Dask engine, which sees the table one partition at a time,
splits it exactly as the local engine does, and a row added to the table leaves every other row
on its side. The test share is ``test_size`` on average; the classes are not stratified, which a
hash cannot do, and on a few thousand rows their test share differs by about a point.

The encoding is a pure function of the schema (no fitted state): numeric features pass through
as floats (missing stays NaN), each category becomes a 0/1 column ``<feature>=<category>``.
Serving calls the same :func:`encode`, so training and serving cannot disagree.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.metrics import class_positions
from pipelines.schema import Schema

ID = "id"
LABEL = "label"


def feature_names(schema: Schema) -> list[str]:
    """Names of the model's input columns, in the order the model sees them."""
    names: list[str] = []
    for name, feature in schema.features.items():
        if feature.type == "category":
            names.extend(f"{name}={category}" for category in feature.categories or ())
        else:
            names.append(name)
    return names


def encode(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Turn raw feature columns into the model's float matrix.

    Args:
        frame: Rows with (at least) every feature column of the schema, already validated.
        schema: The feature schema.

    Returns:
        A float32 frame with the columns of :func:`feature_names`, same index as ``frame``.
    """
    categorical = [name for name, f in schema.features.items() if f.type == "category"]
    # Arrow compares strings without holding the GIL: the categorical columns of a large batch
    # are encoded side by side on all cores, as the model then scores them.
    with ThreadPoolExecutor(max_workers=min(len(categorical), os.cpu_count() or 1) or 1) as pool:
        columns_of = pool.map(lambda name: _one_hot(frame, name, schema), categorical)
        one_hot = dict(zip(categorical, columns_of, strict=True))
    columns: dict[str, np.ndarray] = {}
    for name, feature in schema.features.items():
        if feature.type == "category":
            for category, column in zip(feature.categories or (), one_hot[name], strict=True):
                columns[f"{name}={category}"] = column
        else:
            columns[name] = pd.to_numeric(frame[name]).to_numpy(dtype=np.float32, na_value=np.nan)
    return pd.DataFrame(columns, index=frame.index)


def _one_hot(frame: pd.DataFrame, name: str, schema: Schema) -> list[np.ndarray]:
    """One float32 0/1 column per category of feature ``name`` (missing is 0 in every one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(frame[name], from_pandas=True)
    return [
        pc.fill_null(pc.equal(array, category), False)
        .to_numpy(zero_copy_only=False)
        .astype(np.float32)
        for category in schema.features[name].categories or ()
    ]


def labels(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """What the model learns of each row, in the model's terms.

    Binary: 1 for the positive class, 0 otherwise. Multiclass: the class's position in the
    schema's ``classes`` (the model never sees the data's own class names, and the service
    names them again). Regression: the number.
    """
    target = schema.target
    column = frame[target.column]
    if target.task == "regression":
        return pd.to_numeric(column).to_numpy(dtype=np.float64)
    if target.task == "multiclass":
        return class_positions(column, target.labels)
    return (column == target.positive).to_numpy(dtype=np.int8)


def in_test(ids: pd.Series, test_size: float, seed: int, salt: str = "") -> np.ndarray:
    """Whether each id's row belongs to the test set: its hash, salted with ``seed``, is low.

    The id is hashed as text, so an id read as a number by one reader and as text by another
    still lands on the same side. Another ``salt`` draws another set, independent of the test
    set's (a regression's calibration rows are drawn from the training rows so).
    """
    return id_hashes(ids, seed, salt) < np.uint64(int(test_size * 2.0**64))


def fold_of(ids: pd.Series, folds: int, seed: int) -> np.ndarray:
    """Each id's cross-validation fold, 0 to ``folds - 1``: its hash, salted its own way, modulo.

    Like the split, a row's fold depends on its id alone: rows added to the table leave every
    other row in its fold. The folds are about equal in size, not stratified.
    """
    return (id_hashes(ids, seed, salt="fold:") % np.uint64(folds)).astype(np.int64)


def id_hashes(ids: pd.Series, seed: int, salt: str = "") -> np.ndarray:
    """A 64-bit hash of each id, as text, keyed by ``salt`` and ``seed``."""
    key = hashlib.blake2b(f"{salt}{seed}".encode(), digest_size=8).hexdigest()  # 16 characters
    hashes = pd.util.hash_pandas_object(ids.astype("string"), index=False, hash_key=key)
    return hashes.to_numpy()


def split(
    frame: pd.DataFrame, schema: Schema, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and test rows of ``frame`` (:func:`in_test`), each sorted by id."""
    test = in_test(frame[schema.id], test_size, seed)
    return frame[~test].sort_values(schema.id), frame[test].sort_values(schema.id)


def featurize(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The stage's output table: ``id``, ``label`` and the encoded features."""
    encoded = encode(frame, schema)
    encoded.insert(0, LABEL, labels(frame, schema))
    encoded.insert(0, ID, frame[schema.id].to_numpy())
    return encoded.reset_index(drop=True)


def read_features(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Read a featurize output as (feature matrix, labels, ids).

    The output is one Parquet file (local engine) or a folder of them (Dask engine's partitions).
    """
    table = pd.read_parquet(path)
    return table.drop(columns=[ID, LABEL]), table[LABEL].to_numpy(), table[ID].to_numpy()
