"""The serving benchmark's pure parts, and its baseline server really serves the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import load, serving
from pipelines.core.features import encode
from pipelines.core.model import LoadedModel, load_model, read_threshold
from pipelines.params import load_paths
from pipelines.schema import Schema
from pipelines.serving.batch import columns
from pipelines.serving.example import request_records
from tests.support.serving import assert_predictions_match, expected_predictions
from tests.support.training import HALF_WIDTH


def test_request_bodies_carry_raw_json_types(raw: pd.DataFrame, schema: Schema) -> None:
    with_nulls = raw[raw[list(schema.features)].isna().any(axis=1)]  # none when nothing is nullable
    rows = pd.concat([with_nulls.head(2), raw.head(2)])
    records = request_records(rows, schema)
    assert [list(r) for r in records] == [list(schema.features)] * len(rows)
    kinds = {"integer": int, "number": float, "category": str}
    for record, (_, row) in zip(records, rows.iterrows(), strict=True):
        for name, feature in schema.features.items():
            if pd.isna(row[name]):
                assert record[name] is None, name
            else:
                assert type(record[name]) is kinds[feature.type], name
                assert record[name] == row[name], name
    body = json.loads(serving.service_bodies(records)[0])
    assert body == {"records": [records[0]]}


def _results(ours: float, naive: float, p99: float, batch: float, off: float = 1300.0) -> dict:
    def loads(per_second: float, p99_ms: float) -> dict:
        figures = {"per_second": per_second, "p50_ms": 1.0, "p99_ms": p99_ms, "errors": 0}
        return {str(c): figures for c in serving.CLIENTS}

    return {
        "settings": {
            "cores": 2,
            "load_average_before": [0.5, 0.4, 0.3],
            "load_average_after": [1.5, 0.9, 0.5],
            "workers": 1,
            "load_generator": "wrk, 1 thread",
            "seconds": 10.0,
            "warmup_seconds": 5.0,
        },
        "servers": {
            "ours": loads(ours, p99),
            "naive": loads(naive, 400.0),
            "mlflow": {"error": "mlflow models serve exited: no model"},
        },
        "metrics_cost": {"on": [ours, 1.0, 9e9], "off": [1.0, off, 9e9]},  # medians: ours, off
        "bare": {"per_second": 4000.0, "p50_ms": 0.2, "p99_ms": 0.5},
        "batch": {
            "rows": 100_000,
            "bare_rows_per_s": 300_000.0,
            "encode_predict_rows_per_s": 300_000.0 * batch,
            "end_to_end_rows_per_s": 100_000.0,
            "command_seconds": 4.0,
        },
    }


def test_checks_compute_the_ratios_and_judge_the_targets() -> None:
    checks = {c.name: c for c in serving.checks(_results(1200.0, 40.0, 9.0, 0.9))}
    speedup = checks["ours / naive throughput, 8 clients"]
    assert speedup.value == pytest.approx(30.0)
    assert speedup.passed is True
    assert checks["ours p99 latency, 8 clients"].passed is True
    assert checks["ours / bare model calls, 8 clients"].value == pytest.approx(0.3)
    assert checks["ours / bare model calls, 8 clients"].passed is None  # no target
    assert checks["batch encode+predict / bare model rows/s"].passed is True
    assert checks["ours / mlflow models serve, 8 clients"].value is None
    monitored = checks["ours / ours without model metrics, 8 clients, medians"]
    assert monitored.value == pytest.approx(1200.0 / 1300.0)
    assert monitored.passed is True
    costly = serving.checks(_results(1200.0, 40.0, 9.0, 0.9, off=1400.0))
    assert next(c for c in costly if c.name.startswith("ours / ours")).passed is False

    failing = {c.name: c.passed for c in serving.checks(_results(200.0, 40.0, 30.0, 0.5))}
    assert failing["ours / naive throughput, 8 clients"] is False
    assert failing["ours p99 latency, 8 clients"] is False
    assert failing["batch encode+predict / bare model rows/s"] is False


def test_the_report_prints_figures_ratios_verdicts_and_what_was_not_measured() -> None:
    text = serving.report(_results(1200.0, 40.0, 30.0, 0.9))
    assert text.startswith("2 cores, load average 0.50 before and 1.50 after; 1 worker")
    assert "30.00x  >= 10x" in text
    assert "30.00 ms  <= 25 ms" in text
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("ours / naive")).endswith("PASS")
    assert next(line for line in lines if line.startswith("ours p99")).endswith("FAIL")
    assert "mlflow models serve                       not measured (below)" in text
    assert "not measured:\n  mlflow models serve exited: no model" in text
    assert "raw records in, its outputs out" in text  # what MLflow's server is given
    assert "300,000" in text
    without_ours = _results(1.0, 1.0, 1.0, 1.0)
    del without_ours["servers"]["ours"]
    assert "n/a  >= 10x      n/a" in serving.report(without_ours)


def test_mlflow_bodies_are_the_raw_records_the_service_gets(
    raw: pd.DataFrame, schema: Schema
) -> None:
    records = request_records(raw.head(3), schema)
    bodies = [json.loads(b) for b in serving.mlflow_bodies(records)]
    assert [b["dataframe_records"] for b in bodies] == [[r] for r in records]
    assert [json.loads(b)["records"] for b in serving.service_bodies(records)] == [
        b["dataframe_records"] for b in bodies
    ]


# ---------------------------------------------------------------------------------------------
# The naive server, for real (tests/benchmarks/conftest.py starts it)


@pytest.fixture(scope="module")
def model(project: Path) -> LoadedModel:
    return load_model(project / "models" / "model")


def test_the_naive_server_answers_the_models_outputs_in_the_services_shape(
    naive_url: str, project: Path, raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    rows = pd.concat([raw.head(20), raw[raw[list(schema.features)].isna().any(axis=1)].head(3)])
    records = request_records(rows, schema)
    x = encode(rows, schema)[model.meta["features"]]
    if schema.target.task == "regression":
        output = model.model.predict(x)
    else:
        output = model.model.predict_proba(x)
        output = output[:, 1] if schema.target.task == "binary" else output
    threshold = read_threshold(project / load_paths(project / "params.yaml").model)
    expected = expected_predictions(output, schema, threshold=threshold, half_width=HALF_WIDTH)

    atol = 1e-6 if schema.target.task == "regression" else 0.0  # a value near 0

    answer = load._post(naive_url + "/predict", json.dumps({"records": records}))
    assert_predictions_match(answer["predictions"], expected, 1e-6, atol)
    single = load._post(naive_url + "/predict", serving.service_bodies(records[:1])[0])
    assert_predictions_match(single["predictions"], expected[:1], 1e-6, atol)
    # What the benchmark checks every server by: the model's output on the first record
    ours, mlflow_output = serving.answer_readers(schema)
    first = np.asarray(output, dtype=np.float64).reshape(len(rows), -1)[0]
    np.testing.assert_allclose(ours(single), first, rtol=0, atol=1e-6)
    # MLflow answers the registered model's output: a binary model's probabilities, else the
    # batch scorer's columns as records (pipelines/serving/mlflow_model.py)
    scored = model.predict(encode(rows.head(1), schema))
    mlflow_answer = (
        {"predictions": scored.tolist()}
        if schema.target.task == "binary"
        else {"predictions": pd.DataFrame(columns(scored, schema, model)).to_dict("records")}
    )
    np.testing.assert_allclose(mlflow_output(mlflow_answer), first, rtol=0, atol=1e-6)


def test_best_seconds_times_every_action_in_turn_and_keeps_one_figure_each() -> None:
    calls: list[str] = []
    figures = serving.best_seconds([lambda: calls.append("a"), lambda: calls.append("b")], 3)
    assert calls == ["a", "b"] * 3
    assert len(figures) == 2
    assert all(seconds >= 0 for seconds in figures)
