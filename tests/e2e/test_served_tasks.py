"""A real `bentoml serve` of a regression and of a multiclass model, over HTTP.

Each task's real table (tests/support/tasks.py) runs through validate, featurize, train and
evaluate once per module; its model is imported into a temporary BentoML home as `make serve`
imports it, and served on a free port of 127.0.0.1. The answers are held to the evaluate stage's
``predictions.csv`` and the fitted booster's own margins; the batch scorer's command and the
registered MLflow model (saved and loaded by MLflow itself) must give the service's numbers; the
score metrics must count the one number monitoring watches; bad records get a 400 naming them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks import previous
from pipelines.core.drift import min_share
from pipelines.core.features import encode
from pipelines.core.model import load_model
from pipelines.core.profile import Profile, build_profile
from pipelines.params import MonitorParams, load_paths, load_section
from pipelines.schema import Schema, read_raw
from pipelines.serving import names, telemetry
from tests.support.columns import ROOT
from tests.support.floats import EPS32, sum_tolerance
from tests.support.serving import Server, import_model, records, start
from tests.support.tasks import Project, pipeline
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow  # two real servers, each for a model trained in the module
FLUSHED = telemetry.FLUSH_SECONDS + 1.5  # counts reach /metrics within FLUSH_SECONDS


@dataclass(frozen=True)
class Served:
    """A task's project laid out as params.yaml says, and its running service."""

    made: Project
    server: Server
    client: httpx.Client

    @property
    def schema(self) -> Schema:
        return self.made.schema

    @property
    def task(self) -> str:
        return self.made.schema.target.task

    def rows(self) -> pd.DataFrame:
        """The raw test rows, in predictions.csv's order, with its columns joined."""
        raw = read_raw(self.made.path("raw.csv"))
        predictions = pd.read_csv(self.made.path("predictions.csv"))
        joined = predictions.merge(
            raw, left_on="id", right_on=self.schema.id, how="left", suffixes=("", "_raw")
        )
        assert len(joined) == len(predictions)
        return joined

    def post(self, path: str, rows: pd.DataFrame | list[dict[str, Any]]) -> httpx.Response:
        body = rows if isinstance(rows, list) else records(rows, self.schema)
        return self.client.post(path, json={"records": body})


def monitored(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The score monitoring watches, from evaluate's predictions: top probability or value."""
    if task == "regression":
        return frame["prediction"].to_numpy(dtype=np.float64)
    columns = [c for c in frame.columns if c.startswith("probability_")]
    return frame[columns].to_numpy(dtype=np.float64).max(axis=1)


def lay_out(made: Project) -> None:
    """Put the stages' outputs where params.yaml's paths say, as `dvc repro` leaves them.

    The reference profile is built from the training rows and the test rows' monitored score
    (and a multiclass model's predicted classes);
    the card is a stand-in (the service only serves its bytes on ``GET /card``).
    """
    paths = load_paths(made.path("params.yaml"))
    root = made.root
    shutil.copytree(made.path("model"), root / paths.model)
    for source, target in (("metrics.json", paths.metrics), ("predictions.csv", paths.predictions)):
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made.path(source), root / target)
    monitor = load_section("monitor", MonitorParams, made.path("params.yaml"))
    raw = read_raw(made.path("raw.csv"))
    train_ids = pd.read_parquet(made.path("train.parquet"), columns=["id"])["id"]
    predictions = pd.read_csv(made.path("predictions.csv"))
    task = made.schema.target.task
    scores = monitored(predictions, task)
    classes = [f"probability_{c}" for c in made.schema.target.labels]
    predicted = predictions[classes].to_numpy().argmax(axis=1) if task == "multiclass" else None
    profile = build_profile(
        raw[raw[made.schema.id].isin(train_ids)],
        scores,
        made.schema,
        monitor.bins,
        monitor.score_bins,
        share=min_share(monitor.min_rows),
        predicted=predicted,
    )
    (root / paths.reference).write_text(json.dumps(profile.to_json()))
    (root / paths.card).write_text("# A model card\n")
    params = yaml.safe_load(made.path("params.yaml").read_text())
    params["serve"]["workers"] = 1  # one process: cheap, and every count on /metrics is its own
    made.path("params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module", params=["regression", "multiclass"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    task = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = pipeline(tmp_path_factory.mktemp(task), task, monkeypatch)
    lay_out(made)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENTOML_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    repo = ScratchRepo(made.root, env)  # the project folder; the code comes from PYTHONPATH
    tag = import_model(repo, env)
    server = start(repo, env, tag, tmp_path_factory.mktemp("logs") / "serve.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield Served(made, server, client)
    finally:
        server.stop()


# --- predictions -------------------------------------------------------------------------------


def test_predictions_have_the_tasks_shape_and_evaluates_numbers(served: Served) -> None:
    rows = served.rows().sample(frac=1, random_state=3)  # order must follow the request
    max_batch = served.server.params()["serve"]["max_batch"]
    answered: list[dict[str, Any]] = []
    for start_at in range(0, len(rows), max_batch):
        response = served.post("/predict", rows.iloc[start_at : start_at + max_batch])
        assert response.status_code == 200, response.text
        body = response.json()
        assert "threshold" not in body["model"]  # it decides only a binary label
        answered += body["predictions"]
    assert len(answered) == len(rows)
    if served.task == "regression":
        assert all(set(p) == {"prediction", "interval"} for p in answered)
        got = np.array([[p["prediction"], *p["interval"]] for p in answered])
        want = rows[["prediction", "low", "high"]].to_numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        return
    classes = [str(c) for c in served.schema.target.labels]
    assert all(list(p["probabilities"]) == classes for p in answered)
    got = np.array([list(p["probabilities"].values()) for p in answered])
    want = rows[[f"probability_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert [p["label"] for p in answered] == rows["predicted"].tolist()


def test_a_single_record_gets_its_answer_in_a_batch(served: Served) -> None:
    """One record goes through treelite, a batch of twenty through XGBoost: the same numbers."""
    rows = served.rows().head(20)
    in_batch = served.post("/predict", rows).json()["predictions"][7]
    (single,) = served.post("/predict", rows.iloc[[7]]).json()["predictions"]
    if served.task == "regression":
        assert single["prediction"] == pytest.approx(in_batch["prediction"], rel=1e-6)
        assert single["interval"] == pytest.approx(in_batch["interval"], rel=1e-6)
    else:
        assert single["label"] == in_batch["label"]
        assert single["probabilities"] == pytest.approx(in_batch["probabilities"], abs=1e-6)


def test_the_openapi_document_describes_the_tasks_responses(served: Served) -> None:
    document = served.client.get("/docs.json").json()
    schemas = document["components"]["schemas"]
    name = {"regression": "RegressionPrediction", "multiclass": "MulticlassPrediction"}
    properties = schemas[name[served.task]]["properties"]
    fields = {"regression": {"prediction", "interval"}, "multiclass": {"label", "probabilities"}}
    assert set(properties) == fields[served.task]
    assert "Prediction" not in schemas  # the binary one
    # what `make bench-previous` sends another release: the fields and kinds of the schema
    features = served.schema.features
    assert previous.record_fields(document) == {n: f.type for n, f in features.items()}


# --- explanations ------------------------------------------------------------------------------


def test_explanations_add_up_to_the_boosters_margin(served: Served) -> None:
    from xgboost import DMatrix

    rows = served.rows().iloc[[0, 7, 30, -1]]
    response = served.post("/explain", rows)
    assert response.status_code == 200, response.text
    explained = response.json()["explanations"]
    loaded = load_model(served.made.path("model"))
    x = encode(rows, served.schema)[loaded.meta["features"]]
    margins = loaded.model.get_booster().predict(DMatrix(x), output_margin=True)
    classes = list(served.schema.target.labels)
    for i, explanation in enumerate(explained):
        assert list(explanation["contributions"]) == list(served.schema.features)
        parts = [explanation["base"], *explanation["contributions"].values()]
        summed = sum_tolerance(parts, x.shape[1] + 1)
        if served.task == "regression":
            total, margin = explanation["prediction"], float(margins[i])
            assert total == pytest.approx(rows["prediction"].iloc[i], abs=1e-5)
        else:
            assert explanation["label"] == rows["predicted"].iloc[i]
            total, margin = (
                explanation["margin"],
                float(margins[i, classes.index(rows["predicted"].iloc[i])]),
            )
        assert sum(parts) == pytest.approx(total, abs=summed, rel=4 * EPS32)
        assert total == pytest.approx(margin, abs=summed + 1e-5, rel=4 * EPS32)


# --- the same numbers elsewhere ----------------------------------------------------------------


def test_the_batch_scorers_command_gives_the_services_numbers(
    served: Served, tmp_path: Path
) -> None:
    rows = served.rows().head(60)
    raw_columns = list(read_raw(served.made.path("raw.csv")).columns)
    rows[raw_columns].to_csv(tmp_path / "rows.csv", index=False)
    paths = load_paths(served.made.path("params.yaml"))
    files = (str(tmp_path / "rows.csv"), str(tmp_path / "scores.csv"))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.serving.batch", *files, "--model", str(paths.model)],
        cwd=served.made.root,
        env=served.server.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    answered = served.post("/predict", rows).json()["predictions"]
    assert scored[served.schema.id].tolist() == rows[served.schema.id].tolist()
    np.testing.assert_allclose(
        scored.drop(columns=[served.schema.id, "label"], errors="ignore").to_numpy(),
        as_table(answered, served.task),
        rtol=1e-6,
        atol=1e-6,
    )
    if served.task == "multiclass":
        assert scored["label"].astype(str).tolist() == [str(p["label"]) for p in answered]


def as_table(answered: list[dict[str, Any]], task: str) -> np.ndarray:
    """The service's numbers as the batch scorer's columns (label aside)."""
    if task == "regression":
        return np.array([[p["prediction"], *p["interval"]] for p in answered])
    return np.array([list(p["probabilities"].values()) for p in answered])


def test_the_registered_mlflow_model_gives_the_services_numbers(
    served: Served, tmp_path: Path
) -> None:
    import mlflow

    from pipelines.stages.register import PYFUNC, pip_requirements, raw_example, raw_signature

    schema = served.schema
    rows = served.rows().head(25)
    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(  # as the register stage logs it: code, model folder, schema
        saved,
        python_model=PYFUNC,
        artifacts={
            "model": str(served.made.path("model")),
            "schema": str(served.made.path("schema.yaml")),
        },
        code_paths=[str(ROOT / "pipelines")],
        signature=raw_signature(schema),
        pip_requirements=pip_requirements(load_model(served.made.path("model"))),
    )
    frame = raw_example(read_raw(served.made.path("raw.csv")), schema, rows["id"].tolist())
    got = mlflow.pyfunc.load_model(str(saved)).predict(frame)
    answered = served.post("/predict", rows).json()["predictions"]
    assert isinstance(got, pd.DataFrame)
    names_out = [spec.name for spec in raw_signature(schema).outputs.inputs]
    assert list(got.columns) == names_out
    np.testing.assert_allclose(
        got.drop(columns=["label"], errors="ignore").to_numpy(dtype=np.float64),
        as_table(answered, served.task),
        rtol=1e-6,
        atol=1e-6,
    )
    if served.task == "multiclass":
        assert got["label"].tolist() == [p["label"] for p in answered]


# --- telemetry ---------------------------------------------------------------------------------


def bin_counts(served: Served, name: str) -> dict[str, float]:
    """The served counts per bin of the counter ``name`` on /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{served.server.url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                counts[sample.labels["bin"]] = counts.get(sample.labels["bin"], 0) + sample.value
    return counts


def score_bins(served: Served) -> dict[str, float]:
    """The served-score counts per bin on /metrics."""
    return bin_counts(served, names.SCORE_BIN)


def test_the_score_metrics_count_the_monitored_score(served: Served) -> None:
    reference = load_paths(served.made.path("params.yaml")).reference
    profile = Profile.read(served.made.path(str(reference)))
    time.sleep(FLUSHED)  # what the tests before this one served is counted by now
    before = score_bins(served)
    classes_before = bin_counts(served, names.CLASS_BIN)
    rows = served.rows().head(40)
    answered = []
    for part in (rows.head(3), rows.iloc[3:]):  # the per-record path and the vectorised one
        response = served.post("/predict", part)
        assert response.status_code == 200
        answered += response.json()["predictions"]
    time.sleep(FLUSHED)
    after = score_bins(served)
    added = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    # the answered numbers, not evaluate's rounded ones: test rows sit on the quantile edges
    scores = as_table(answered, served.task)
    scores = scores[:, 0] if served.task == "regression" else scores.max(axis=1)
    expected = profile.score.binning.assign(scores)
    labels = profile.score.binning.labels
    want = {label: float(np.sum(expected == i)) for i, label in enumerate(labels)}
    assert {b: v for b, v in added.items() if v} == {b: v for b, v in want.items() if v}
    # a multiclass model's predicted classes, counted per class: the answered labels' counts
    classes_after = bin_counts(served, names.CLASS_BIN)
    if served.task != "multiclass":
        assert profile.predicted is None
        assert classes_after == {}
        return
    assert profile.predicted is not None
    grown = {b: v - classes_before.get(b, 0) for b, v in classes_after.items()}
    labels_served = pd.Series([str(p["label"]) for p in answered]).value_counts()
    assert {b: v for b, v in grown.items() if v} == {b: float(v) for b, v in labels_served.items()}
    assert set(classes_after) == set(profile.predicted.binning.labels)


# --- bad input ---------------------------------------------------------------------------------


def bad_records(schema: Schema, good: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(field, value or None to drop it, why) for the schema's kinds of features."""
    numeric = next(n for n, f in schema.features.items() if f.type != "category")
    category = next(n for n, f in schema.features.items() if f.type == "category")
    high = schema.features[numeric].max
    cases = [
        ("no such field", 1, "unknown field"),
        (numeric, "MISSING", "missing field"),
        (numeric, str(good[numeric]), "text for a number"),
        (numeric, True, "bool for a number"),
        (category, "no such category", "unknown category"),
        (category, 3, "number for a category"),
    ]
    if high is not None:
        cases.append((numeric, high + abs(high) + 1, "above the range"))
    return cases


@pytest.mark.parametrize("path", ["/predict", "/explain"])
def test_a_bad_record_gets_a_400_naming_the_record_and_field(served: Served, path: str) -> None:
    good = records(served.rows().head(4), served.schema)
    for field, value, why in bad_records(served.schema, good[0]):
        batch = [dict(r) for r in good]
        if value == "MISSING":
            del batch[2][field]
        else:
            batch[2][field] = value
        response = served.post(path, batch)
        assert response.status_code == 400, (why, response.text)
        body = response.json()
        assert body["errors"][0]["field"] == f"records.2.{field}", why
        assert f"records.2.{field}" in body["error"], why
    assert served.post(path, []).status_code == 400
    malformed = served.client.post(
        path, content=b'{"records": [', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
