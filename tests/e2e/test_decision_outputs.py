"""Value and fairness of the trained example, recomputed from its outputs independently.

``eval/metrics.json``'s value and ``eval/fairness.json``'s rates against cell-by-cell sums and
pandas group-bys of ``eval/predictions.csv`` joined with the raw table: the trained copy that
the slow tests share (a fresh clone has no predictions before ``dvc repro``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.model import read_threshold
from pipelines.params import FairnessParams, ValueParams, load_optional, load_paths
from pipelines.schema import load_schema
from tests.core.test_fairness import rates_by_hand
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow


def committed(root: Path) -> tuple[dict[str, float], pd.DataFrame, ValueParams | None]:
    paths = load_paths(root / "params.yaml")
    metrics = json.loads((root / paths.metrics).read_text())
    return (
        metrics,
        pd.read_csv(root / paths.predictions),
        load_optional("value", ValueParams, root / "params.yaml"),
    )


def test_the_value_is_an_independent_sum_over_eval_predictions(trained_repo: ScratchRepo) -> None:
    """value_per_1000 from eval/predictions.csv, the raw table and params, cell by cell."""
    root = trained_repo.path
    params_file = root / "params.yaml"
    metrics, predictions, section = committed(root)
    if section is None:
        pytest.skip("params.yaml states no value model")
    paths = load_paths(params_file)
    schema = load_schema(root / paths.schema_)
    if schema.target.task != "binary" or section.gain is None:
        pytest.skip("the cell-by-cell check is a binary model's")
    raw = pd.read_csv(root / paths.raw).set_index(schema.id)
    amount = (
        raw.loc[predictions["id"], section.amount].to_numpy(float)
        if section.amount
        else np.ones(len(predictions))
    )
    names = {(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}
    cells = [
        section.gain[names[(int(a), int(d))]]
        for a, d in zip(predictions.label, predictions.predicted, strict=True)
    ]
    expected = float(np.mean(np.asarray(cells, dtype=float) * amount) * 1000)
    assert metrics["value_per_1000"] == pytest.approx(expected, rel=1e-6)
    acting = {"act on nobody": 0, "act on everybody": 1}
    trivial = max(
        float(
            np.mean([section.gain[names[(int(a), d)]] for a in predictions.label] * amount) * 1000
        )
        for d in acting.values()
    )
    assert metrics["value_trivial_per_1000"] == pytest.approx(trivial, rel=1e-6)
    assert metrics["value_lift_low"] <= expected - trivial <= metrics["value_lift_high"]


def test_the_predictions_decide_at_the_models_own_threshold(trained_repo: ScratchRepo) -> None:
    root = trained_repo.path
    params_file = root / "params.yaml"
    metrics, predictions, _ = committed(root)
    if "threshold" not in metrics:
        pytest.skip("not a binary model")
    threshold = read_threshold(root / load_paths(params_file).model)
    assert metrics["threshold"] == pytest.approx(threshold)
    expected = (predictions["probability"] >= threshold).astype(int)
    assert (predictions["predicted"] == expected).all()


def test_the_audit_equals_a_group_by_of_eval_predictions(trained_repo: ScratchRepo) -> None:
    root = trained_repo.path
    params_file = root / "params.yaml"
    params = load_optional("fairness", FairnessParams, params_file)
    paths = load_paths(params_file)
    schema = load_schema(root / paths.schema_)
    if params is None or schema.target.task != "binary":
        pytest.skip("no fairness section, or not a binary model (the group-by is a binary one's)")
    found = json.loads((root / paths.fairness).read_text())
    predictions = pd.read_csv(root / paths.predictions)
    raw = pd.read_csv(root / paths.raw).set_index(schema.id)
    for column in params.sensitive:
        group = raw.loc[predictions["id"], column].astype("string").fillna("<missing>")
        expected = rates_by_hand(predictions["label"], predictions["predicted"], group.to_numpy())
        for name, row in expected.iterrows():
            got = found[column]["groups"][str(name)]
            assert got["rows"] == row["rows"]
            for rate in ("selection_rate", "tpr", "fpr"):
                assert got[rate] == pytest.approx(row[rate], abs=1e-6), (column, name, rate)
