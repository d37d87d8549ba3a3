"""``make refresh-data`` for a regression and a multiclass model: labelled served rows join the
real training table with their labels in the data's own terms (a class, a number)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.monitoring.refresh import refresh
from pipelines.monitoring.served import read_labels, read_served
from pipelines.schema import read_raw
from tests.support.tasks import Monitored

SERVED, LABELLED = 20, 15


def new_labels(m: Monitored, rows: pd.DataFrame) -> list[object]:
    """Labels unlike the rows' own: the refresh must take the late label, not the raw value."""
    values = rows[m.schema.target.column].tolist()
    if m.task == "regression":
        return [round(float(v) + 1.25, 2) for v in values]
    classes = [str(c) for c in m.schema.target.labels]
    return [classes[(classes.index(str(v)) + 1) % len(classes)] for v in values]


def test_labelled_served_rows_join_the_table_with_their_labels(
    monitored: Monitored, tmp_path: Path
) -> None:
    m = monitored
    schema, target = m.schema, m.schema.target.column
    raw = read_raw(m.made.path("raw.csv"))
    rows = m.test.head(SERVED).reset_index(drop=True)
    ids = [10**7 + i for i in range(SERVED)]
    served_rows = rows.drop(columns=[target]).assign(**{schema.id: ids})
    served_rows.to_csv(tmp_path / "served.csv", index=False)
    labels = new_labels(m, rows)[:LABELLED]
    pd.DataFrame({"id": ids[:LABELLED], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False
    )

    served = read_served(tmp_path / "served.csv", schema)
    done = refresh(
        raw, served.frame, served.ids, read_labels(tmp_path / "labels.csv", schema), schema
    )

    assert (done.labelled, done.added, done.replaced, done.dropped) == (LABELLED, LABELLED, 0, {})
    assert len(done.table) == len(raw) + LABELLED
    assert list(done.table.columns) == list(raw.columns)
    assert done.table.iloc[: len(raw)].equals(raw)  # the raw rows untouched
    new = done.table.iloc[len(raw) :].reset_index(drop=True)
    assert new[schema.id].tolist() == ids[:LABELLED]
    assert done.table[target].dtype == raw[target].dtype
    if m.task == "regression":
        np.testing.assert_allclose(new[target].to_numpy(dtype=float), labels)
    else:
        assert new[target].astype(str).tolist() == labels
    for name in schema.features:
        pd.testing.assert_series_equal(
            new[name], rows[name].head(LABELLED), check_dtype=False, check_names=False
        )
    # Written and read back as the pipeline reads the raw table, the labels are the same
    done.table.to_csv(tmp_path / "raw.csv", index=False)
    again = read_raw(tmp_path / "raw.csv").iloc[len(raw) :]
    assert again[target].astype(str).tolist() == new[target].astype(str).tolist()
