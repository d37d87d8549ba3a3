"""The shadow report on shadow logs written by the service's own writer, for this schema's task.

The model is a small XGBoost fit of the project's table with its linear baseline and prior
(:func:`tests.support.training.packed_model`); its answers to a sample of the table's rows, one
request per row, are logged beside a challenger's by :class:`pipelines.serving.shadow.Shadow`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core import features
from pipelines.core.drift import Binning, quantile_edges
from pipelines.core.metrics import METRICS, BinaryPredictions, MulticlassPredictions
from pipelines.core.metrics import RegressionPredictions as Regression
from pipelines.core.model import BASELINE, load_model, monitored_score
from pipelines.monitoring import challenger as report
from pipelines.monitoring.quality import gated
from pipelines.monitoring.served import MonitorError
from pipelines.params import GateParams, RegisterParams, ValueParams, load_optional, load_section
from pipelines.schema import Schema
from pipelines.serving import fallback, scoring, shadow
from pipelines.serving.example import request_records
from pipelines.serving.fallback import CircuitBreaker
from pipelines.serving.request_log import RequestLog
from tests.support.columns import PARAMS
from tests.support.training import packed_model

MODEL_NAME = load_section("register", RegisterParams, PARAMS).model_name
REQUESTS = 400


@pytest.fixture(scope="module")
def packed(raw: pd.DataFrame, schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return packed_model(raw, schema, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def model(packed: Path) -> scoring.ServedModel:
    return scoring.load_served(packed, {"name": MODEL_NAME}, f"{MODEL_NAME}:model")


@pytest.fixture(scope="module")
def sample(raw: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The requests: rows of the table with a known target, each with its request id."""
    rows = raw[raw[schema.target.column].notna()]
    rows = rows.sample(min(REQUESTS, len(rows)), random_state=3).reset_index(drop=True)
    return rows.assign(request_id=[f"r{i}" for i in range(len(rows))])


@pytest.fixture(scope="module")
def labels(sample: pd.DataFrame, schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    frame = pd.DataFrame({"id": sample["request_id"], "label": sample[schema.target.column]})
    frame.to_csv(path, index=False)
    return path


def write_log(
    directory: Path, model: scoring.ServedModel, challenger: scoring.ServedModel, rows: pd.DataFrame
) -> Path:
    """Each row as one request, answered by ``model`` and shadowed by ``challenger``."""
    logs = (
        RequestLog(directory / shadow.CHAMPION, 1.0, "model"),
        RequestLog(directory / shadow.CHALLENGER, 1.0, "challenger"),
    )
    twin = shadow.Shadow(challenger, 1.0, 60.0, CircuitBreaker(1, 1.0), logs)
    for request_id, record in zip(
        rows["request_id"], request_records(rows, model.schema), strict=True
    ):
        response = model.predict([record])
        answered = [p.model_dump(mode="json") for p in response.predictions]  # type: ignore[attr-defined]
        assert twin.score(request_id, [record], answered) == "scored"
    return directory


def settings(model: scoring.ServedModel, rows: pd.DataFrame) -> report.Settings:
    scores = monitored_score(model.output(request_records(rows, model.schema)), model.task)
    return report.Settings(
        model.schema,
        Binning("numeric", edges=quantile_edges(scores, 10)),
        load_section("gate", GateParams, PARAMS),
        load_optional("value", ValueParams, PARAMS),
    )


@pytest.fixture(scope="module")
def against_itself(
    model: scoring.ServedModel, sample: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return write_log(tmp_path_factory.mktemp("itself"), model, model, sample)


@pytest.fixture(scope="module")
def against_baseline(
    model: scoring.ServedModel,
    packed: Path,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    baseline = scoring.load_served(
        packed / BASELINE, {"name": MODEL_NAME}, f"{MODEL_NAME}:baseline", model.schema
    )
    return write_log(tmp_path_factory.mktemp("baseline"), model, baseline, sample)


@pytest.fixture(scope="module")
def against_prior(
    model: scoring.ServedModel,
    packed: Path,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    constant = fallback.prior_of(load_model(packed).meta, model)
    assert constant is not None
    return write_log(tmp_path_factory.mktemp("prior"), model, constant, sample)


def test_the_model_against_itself_agrees_everywhere_and_every_paired_difference_is_zero(
    against_itself: Path, model: scoring.ServedModel, sample: pd.DataFrame, labels: Path
) -> None:
    compared = report.compare(against_itself, labels, settings(model, sample))
    assert compared.rows == compared.labelled == len(sample)
    assert compared.unmatched == 0
    assert compared.agreement == 1.0
    assert compared.mean_abs_difference == 0.0
    assert compared.score_psi == pytest.approx(0.0, abs=1e-12)
    assert compared.differences
    # The same requests drawn for both sides in each resample: not one resample differs (an
    # unpaired bootstrap would give intervals as wide as each side's own)
    for difference in compared.differences:
        assert (difference.low, difference.high) == (0.0, 0.0), difference.name
        assert difference.verdict == "no clear difference"


@pytest.fixture(scope="module")
def compared_to_baseline(
    against_baseline: Path, model: scoring.ServedModel, sample: pd.DataFrame, labels: Path
) -> report.Comparison:
    return report.compare(against_baseline, labels, settings(model, sample))


def test_the_models_metrics_are_those_of_its_own_predictions_and_the_gates_metrics_are_all_there(
    compared_to_baseline: report.Comparison, packed: Path, sample: pd.DataFrame, schema: Schema
) -> None:
    compared = compared_to_baseline
    gate = load_section("gate", GateParams, PARAMS)
    names = list(gated(schema.target.task, gate.metrics))
    value = load_optional("value", ValueParams, PARAMS)
    shown = [d.name for d in compared.differences]
    assert shown == names + (["value_per_1000"] if value is not None else [])
    # Each side's metrics, computed here from the saved models' own batch predictions
    encoded = features.encode(sample, schema)
    label = features.labels(sample, schema)
    for directory, side in ((packed, "champion"), (packed / BASELINE, "challenger")):
        loaded = load_model(directory)
        output = loaded.predict(encoded[loaded.meta["features"]])
        ids = np.arange(len(sample))
        task = schema.target.task
        if task == "binary":
            predictions: Any = BinaryPredictions.at_threshold(ids, label, output, loaded.threshold)
        elif task == "multiclass":
            predictions = MulticlassPredictions.of(ids, label, output, schema.target.labels)
        else:
            width = loaded.half_width()
            predictions = Regression(ids, label, output, output - width, output + width)
        for difference in compared.differences:
            if difference.name in names:
                expected = METRICS[task][difference.name].point(predictions)
                got = getattr(difference, side)
                assert got == pytest.approx(expected, rel=1e-5, nan_ok=True), difference.name
    for difference in compared.differences:  # the point difference lies within its interval
        if math.isfinite(difference.low):
            point = difference.challenger - difference.champion
            assert difference.low - 1e-9 <= point <= difference.high + 1e-9, difference.name


def test_agreement_is_the_share_of_requests_given_the_same_decision(
    against_baseline: Path, model: scoring.ServedModel, sample: pd.DataFrame
) -> None:
    compared = report.compare(against_baseline, None, settings(model, sample))
    sides = [
        {line["id"]: line for line in map(json.loads, file.open())}
        for name in (shadow.CHAMPION, shadow.CHALLENGER)
        for file in sorted((against_baseline / name).glob("*.jsonl"))
    ]
    champion, challenger = sides
    if model.task == "regression":
        same = [
            champion[i]["interval"][0] <= challenger[i]["prediction"] <= champion[i]["interval"][1]
            for i in champion
        ]
    else:
        same = [champion[i]["label"] == challenger[i]["label"] for i in champion]
    assert compared.agreement == pytest.approx(np.mean(same))
    assert 0.0 < compared.agreement < 1.0
    assert compared.labelled == 0
    assert compared.differences == []


def test_a_constant_challenger_is_worse_on_the_gates_first_metric_and_its_scores_drift(
    against_prior: Path, model: scoring.ServedModel, sample: pd.DataFrame, labels: Path
) -> None:
    compared = report.compare(against_prior, labels, settings(model, sample))
    first = compared.differences[0]
    assert first.verdict == "worse", first
    assert compared.score_psi > 0.25  # every challenger score in one bin


def test_labels_are_joined_by_request_id_and_unmatched_lines_are_counted(
    against_baseline: Path,
    model: scoring.ServedModel,
    sample: pd.DataFrame,
    labels: Path,
    tmp_path: Path,
) -> None:
    some = pd.read_csv(labels, dtype=str).head(50)
    some.loc[len(some)] = ["not-a-request", some["label"].iloc[0]]
    partial = tmp_path / "labels.csv"
    some.to_csv(partial, index=False)
    compared = report.compare(against_baseline, partial, settings(model, sample))
    assert compared.labelled == 50
    # A line the challenger side lacks (its worker stopped in between): counted, left out
    (champion_file,) = sorted((against_baseline / shadow.CHAMPION).glob("*.jsonl"))
    (challenger_file,) = sorted((against_baseline / shadow.CHALLENGER).glob("*.jsonl"))
    copy = tmp_path / "shadow"
    for source, name in ((champion_file, shadow.CHAMPION), (challenger_file, shadow.CHALLENGER)):
        (copy / name).mkdir(parents=True)
        kept = source.read_text().splitlines(keepends=True)
        (copy / name / source.name).write_text("".join(kept[:-1] if name == "challenger" else kept))
    shorter = report.compare(copy, None, settings(model, sample))
    assert (shorter.rows, shorter.unmatched) == (len(sample) - 1, 1)


def test_logs_that_cannot_be_compared_are_errors_that_say_why(
    against_baseline: Path, model: scoring.ServedModel, sample: pd.DataFrame, tmp_path: Path
) -> None:
    setup = settings(model, sample)
    with pytest.raises(MonitorError, match="MODEL_SHADOW"):
        report.compare(tmp_path / "nothing", None, setup)
    strangers = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["x", "y"], "label": [None, None]}).to_csv(strangers, index=False)
    with pytest.raises(MonitorError, match="label"):
        report.compare(against_baseline, strangers, setup)
    twice = tmp_path / "twice"
    for name in (shadow.CHAMPION, shadow.CHALLENGER):
        (twice / name).mkdir(parents=True)
        (source,) = sorted((against_baseline / name).glob("*.jsonl"))
        first = source.read_text().splitlines(keepends=True)[0]
        (twice / name / source.name).write_text(first * 2)
    with pytest.raises(MonitorError, match="id twice"):
        report.compare(twice, None, setup)


@pytest.mark.parametrize(
    ("better", "low", "high", "verdict"),
    [
        ("higher", 0.01, 0.05, "better"),
        ("higher", -0.05, -0.01, "worse"),
        ("higher", -0.01, 0.05, "no clear difference"),
        ("lower", 0.01, 0.05, "worse"),
        ("lower", -0.05, -0.01, "better"),
        ("lower", -0.05, 0.01, "no clear difference"),
        ("higher", math.nan, math.nan, "undefined"),
    ],
)
def test_the_verdict_follows_the_interval_and_the_metrics_direction(
    better: str, low: float, high: float, verdict: str
) -> None:
    assert report.Difference("m", better, 0.5, 0.5, low, high).verdict == verdict


def test_the_command_writes_both_reports_or_says_why_it_could_not(
    against_baseline: Path, tmp_path: Path
) -> None:
    markdown, document = tmp_path / "shadow.md", tmp_path / "shadow.json"
    outputs = ["--markdown", str(markdown), "--json", str(document), "--params", str(PARAMS)]
    assert report.main([str(tmp_path / "missing"), *outputs]) == 2
    assert "MODEL_SHADOW" in json.loads(document.read_text())["reason"]
    assert not markdown.exists()
