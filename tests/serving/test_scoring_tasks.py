"""Serving a regression and a multiclass model: responses, explanations, fast path, batch scorer.

Each task's real table (tests/support/tasks.py) is run through the stages once per task with
XGBoost, the linear baseline and the dummy. Every number the service answers is held to what
the fitted model itself gives on the pipeline's encoding of the same rows (scikit-learn's and
XGBoost's own ``predict``/``predict_proba``/margins), to the evaluate stage's
``predictions.csv``, and to the half-width in ``meta.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core.features import encode, read_features
from pipelines.core.io import PipelineError
from pipelines.core.linear import Linear
from pipelines.core.model import BASELINE, LoadedModel, load_model
from pipelines.schema import Schema, Target, dump_schema
from pipelines.serving import batch, evaluators, fallback, scoring
from pipelines.serving.request_log import RequestLog
from pipelines.stages.register import output_columns
from tests.support.floats import EPS32, sum_tolerance
from tests.support.serving import records
from tests.support.tasks import Project, pipeline
from tests.support.training import fitted_estimator

LINEAR = {"regression": "ridge", "multiclass": "logistic_regression"}
KINDS = ("xgboost", "linear", "dummy")
INFO = {"name": "m", "threshold": 0.5}  # a threshold is what store.serving_info always holds


def served_from(made: Project) -> scoring.ServedModel:
    """The project's model loaded as the service loads it (schema stored beside the model)."""
    directory = made.path("model")
    shutil.copyfile(made.path("schema.yaml"), directory / scoring.SCHEMA_FILE)
    return scoring.load_served(directory, INFO, "m:test")


@pytest.fixture(scope="module", params=["regression", "multiclass"])
def projects(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Project]:
    """The task's table through the stages with XGBoost, the linear baseline and the dummy."""
    task = request.param
    made = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for kind in KINDS:
            model = LINEAR[task] if kind == "linear" else kind
            made[kind] = pipeline(
                tmp_path_factory.mktemp(f"{task}-{kind}"), task, monkeypatch, model=model
            )
    return made


def evaluated_rows(made: Project) -> pd.DataFrame:
    """The raw test rows, in predictions.csv's order, with its columns joined."""
    raw = pd.read_csv(made.path("raw.csv"))
    predictions = pd.read_csv(made.path("predictions.csv"))
    joined = predictions.merge(
        raw, left_on="id", right_on=made.schema.id, how="left", suffixes=("", "_raw")
    )
    assert len(joined) == len(predictions)
    return joined


def estimator(directory: Path) -> Any:
    """The fitted estimator saved in ``directory``: XGBoost's, or scikit-learn's read by skops."""
    loaded = load_model(directory)
    return loaded.model if loaded.meta["kind"] == "xgboost" else fitted_estimator(directory)


def expected_output(directory: Path, rows: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The fitted estimator's own output on the pipeline's encoding of raw rows."""
    x = encode(rows, schema)[load_model(directory).meta["features"]]
    if schema.target.task == "regression":
        return np.asarray(estimator(directory).predict(x), dtype=np.float64)
    return np.asarray(estimator(directory).predict_proba(x), dtype=np.float64)


def half_width(made: Project) -> float:
    return float(json.loads(made.path("model/meta.json").read_text())["interval"]["half_width"])


@pytest.mark.parametrize("kind", KINDS)
def test_predictions_are_the_models_in_the_tasks_shape(
    projects: dict[str, Project], kind: str
) -> None:
    made = projects[kind]
    schema, task = made.schema, made.schema.target.task
    rows = evaluated_rows(made)
    response = served_from(made).predict(records(rows, schema)).model_dump(mode="json")
    assert set(response["model"]) == {
        "name",
        "version",
        "git_commit",
        "data_md5",
        "mlflow_run_id",
        "bento_model_tag",
        "fallback",
    }  # fmt: skip  (no threshold: it decides only a binary label)
    assert response["model"]["fallback"] is None  # the model answered
    predictions = response["predictions"]
    assert len(predictions) == len(rows)
    expected = expected_output(made.path("model"), rows, schema)
    if task == "regression":
        width = half_width(made)
        assert width > 0
        assert all(set(p) == {"prediction", "interval"} for p in predictions)
        y = np.array([p["prediction"] for p in predictions])
        low, high = np.array([p["interval"] for p in predictions]).T
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(y, rows["prediction"], rtol=0, atol=1e-5)  # evaluate's
        np.testing.assert_allclose(low, rows["low"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(high, rows["high"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(high - low, 2 * width, rtol=1e-9)
        return
    classes = list(schema.target.labels)
    assert all(set(p) == {"label", "probabilities"} for p in predictions)
    assert all(list(p["probabilities"]) == [str(c) for c in classes] for p in predictions)
    p = np.array([list(x["probabilities"].values()) for x in predictions])
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    evaluated = rows[[f"probability_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(p, evaluated, rtol=0, atol=1e-6)
    # the label is the data's own class (as evaluate wrote it), the most probable one
    assert [x["label"] for x in predictions] == [classes[k] for k in expected.argmax(axis=1)]
    assert [x["label"] for x in predictions] == rows["predicted"].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_explanations_add_up_to_the_prediction_or_the_predicted_classs_margin(
    projects: dict[str, Project], kind: str
) -> None:
    made = projects[kind]
    schema, task = made.schema, made.schema.target.task
    rows = evaluated_rows(made).iloc[[0, 5, 17, 40, -1]]
    model = served_from(made)
    explained = model.explain(records(rows, schema)).model_dump(mode="json")["explanations"]
    predicted = model.predict(records(rows, schema)).model_dump(mode="json")["predictions"]
    loaded = load_model(made.path("model"))
    x = encode(rows, schema)[loaded.meta["features"]]
    columns = x.shape[1] + 1
    for i, (explanation, prediction) in enumerate(zip(explained, predicted, strict=True)):
        assert list(explanation["contributions"]) == list(schema.features)
        parts = [explanation["base"], *explanation["contributions"].values()]
        summed = sum_tolerance(parts, columns) + 1e-9
        if task == "regression":
            assert set(explanation) == {"prediction", "base", "contributions"}
            assert sum(parts) == pytest.approx(explanation["prediction"], abs=summed, rel=4 * EPS32)
            assert explanation["prediction"] == pytest.approx(prediction["prediction"], abs=1e-5)
            continue
        assert explanation["label"] == prediction["label"]
        assert explanation["probabilities"] == pytest.approx(prediction["probabilities"], abs=1e-6)
        assert sum(parts) == pytest.approx(explanation["margin"], abs=summed, rel=4 * EPS32)
        top = list(schema.target.labels).index(prediction["label"])
        assert explanation["margin"] == pytest.approx(
            class_margin(made.path("model"), x.iloc[[i]], top, kind),
            abs=summed + 1e-5,
            rel=4 * EPS32,
        )
    first = explained[0]["contributions"].values()
    if kind == "dummy":  # it looks at no feature: its constant is all there is
        assert all(c == 0 for e in explained for c in e["contributions"].values())
        assert all(e["base"] == e.get("margin", e.get("prediction")) for e in explained)
        assert explained[0]["base"] == pytest.approx(dummy_margin(made, predicted[0]), rel=1e-9)
    else:  # some feature moves the first row visibly
        base = abs(explained[0]["base"])
        assert max(abs(c) for c in first) > 0.01 * max(1.0, base)


def class_margin(directory: Path, x: pd.DataFrame, top: int, kind: str) -> float:
    """One row's margin of class ``top``, by the fitted model's own means."""
    model = estimator(directory)
    if kind == "xgboost":
        from xgboost import DMatrix

        margins = model.get_booster().predict(DMatrix(x), output_margin=True)
        return float(margins[0, top])
    if kind == "linear":
        return float(model.decision_function(x)[0, top])
    return float(np.log(model.predict_proba(x)[0, top]))


def dummy_margin(made: Project, prediction: dict[str, Any]) -> float:
    """The fitted dummy's constant: its mean, or the log of its prior share of the class."""
    dummy = fitted_estimator(made.path("model"))
    if made.schema.target.task == "regression":
        return float(np.ravel(dummy.constant_)[0])  # type: ignore[attr-defined]
    top = list(made.schema.target.labels).index(prediction["label"])
    return float(np.log(dummy.class_prior_[top]))  # type: ignore[attr-defined]


def test_small_requests_go_through_treelite_with_xgboosts_numbers(
    projects: dict[str, Project],
) -> None:
    made = projects["xgboost"]
    model = served_from(made)
    scorer = model.scorer
    assert scorer.small is not None  # the fast path converted and passed its probe
    x = model.encoder.encode(records(evaluated_rows(made), made.schema))
    whole = scorer.model.inplace_predict(x)  # XGBoost, every row in one call
    for size in (1, 3, scoring.SMALL_BATCH):
        parts = [scorer.output(x[i : i + size]) for i in range(0, len(x), size)]
        # float32 sums in another order: ~1e-8 of a probability, ~1e-6 of a value near 10
        np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(scorer.output(x[:1]), scorer.small(x[:1]))
    assert scorer.output(x[:1]).shape == whole[:1].shape
    # treelite's C function called as prepared once gives exactly its public call's numbers;
    # input other than the encoder's float32 rows takes the public call
    from treelite import frontend, gtil

    batch = x[: scoring.SMALL_BATCH]
    public = gtil.predict(frontend.from_xgboost(scorer.model), batch, nthread=1)
    public = np.asarray(public, dtype=np.float64).reshape(scorer.small(batch).shape)
    np.testing.assert_array_equal(scorer.small(batch), public)
    np.testing.assert_array_equal(scorer.small(batch.astype(np.float64)), public)


def test_the_encoders_rows_never_take_treelites_public_call(
    projects: dict[str, Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A treelite whose module moved the names the prepared call uses would fall back to the
    public call silently, at twice the cost of a row: this is where it shows."""
    from treelite import gtil

    def public(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("treelite's public gtil.predict was called")

    made = projects["xgboost"]
    model = served_from(made)
    monkeypatch.setattr(gtil, "predict", public)
    small = evaluators.treelite_evaluator(model.scorer.model)  # its probe scores row by row
    assert small is not None
    x = model.encoder.encode(records(evaluated_rows(made), made.schema))[: scoring.SMALL_BATCH]
    np.testing.assert_array_equal(small(x), model.scorer.output(x))


@pytest.mark.parametrize("kind", KINDS)
def test_the_batch_scorer_writes_the_services_numbers_in_evaluates_columns(
    projects: dict[str, Project], kind: str, tmp_path: Path
) -> None:
    made = projects[kind]
    schema = made.schema
    rows = evaluated_rows(made)[pd.read_csv(made.path("raw.csv")).columns]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    loaded = load_model(made.path("model"))
    target = tmp_path / "scores.csv"
    assert batch.score_file(tmp_path / "rows.csv", target, schema, loaded, 0.5) == len(rows)
    scored = pd.read_csv(target, keep_default_na=False)
    served = served_from(made).predict(records(rows, schema)).model_dump(mode="json")
    predictions = served["predictions"]
    expected = [name for _, name in output_columns(schema.target)]
    assert list(scored.columns) == [schema.id, *expected]  # the MLflow signature's names too
    assert scored[schema.id].tolist() == rows[schema.id].tolist()
    if schema.target.task == "regression":
        assert expected == ["prediction", "low", "high"]
        got = scored[expected].to_numpy()
        want = np.array([[p["prediction"], *p["interval"]] for p in predictions])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        return
    classes = list(schema.target.labels)
    assert expected == ["label", *(f"probability_{c}" for c in classes)]
    assert scored["label"].astype(str).tolist() == [str(p["label"]) for p in predictions]
    want = np.array([list(p["probabilities"].values()) for p in predictions])
    np.testing.assert_allclose(scored[expected[1:]].to_numpy(), want, rtol=1e-6, atol=1e-7)


def test_the_batch_scorer_refuses_what_is_not_its_task(projects: dict[str, Project]) -> None:
    made = projects["xgboost"]
    loaded = load_model(made.path("model"))
    rows = pd.read_csv(made.path("raw.csv")).head(3)
    with pytest.raises(batch.ScoreError, match="no positive-class probability"):
        batch.probabilities(rows, made.schema, loaded)
    other = "multiclass" if made.schema.target.task == "regression" else "regression"
    with pytest.raises(batch.ScoreError, match=f"the model is {other} but the schema says"):
        batch.outputs(rows, made.schema, load_model_as(loaded, other))


def load_model_as(loaded: LoadedModel, task: str) -> LoadedModel:
    """The same model with ``meta.json`` saying another task."""
    return LoadedModel(loaded.model, {**loaded.meta, "target": {"task": task}})


def test_a_schema_of_another_task_is_refused_when_the_model_loads(
    projects: dict[str, Project], tmp_path: Path
) -> None:
    made = projects["xgboost"]
    directory = Path(shutil.copytree(made.path("model"), tmp_path / "model"))
    # The same table and features, its target said to be binary
    target = Target(column=made.schema.target.column, positive="yes", values=("no", "yes"))
    binary = made.schema.model_copy(update={"target": target})
    (directory / scoring.SCHEMA_FILE).write_text(dump_schema(binary))
    task = made.schema.target.task
    with pytest.raises(PipelineError, match=f"is {task} but its schema says binary"):
        scoring.load_served(directory, INFO, "m:test")


def test_the_request_log_writes_the_tasks_prediction(
    projects: dict[str, Project], tmp_path: Path
) -> None:
    made = projects["xgboost"]
    rows = records(evaluated_rows(made).head(2), made.schema)
    response = served_from(made).predict(rows)
    predictions = [p.model_dump(mode="json") for p in response.predictions]  # type: ignore[attr-defined]
    RequestLog(tmp_path, 1.0, "v1").write("req", rows, predictions)
    (file,) = tmp_path.iterdir()
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["req/0", "req/1"]
    for line, record, prediction in zip(lines, rows, predictions, strict=True):
        assert line["record"] == record
        assert {k: line[k] for k in prediction} == prediction


def test_a_binary_request_log_line_is_as_before(tmp_path: Path) -> None:
    RequestLog(tmp_path, 1.0, "v1").write("req", [{"a": 1}], [{"probability": 0.25, "label": "x"}])
    (file,) = tmp_path.iterdir()
    line = file.read_text()
    assert line.startswith('{"id":"req","time":"')
    assert line.endswith(
        '","model_version":"v1","record":{"a":1},"probability":0.25,"label":"x"}\n'
    )


def test_the_fallbacks_of_each_task_answer_in_its_shape(projects: dict[str, Project]) -> None:
    """The train stage packs the task's linear baseline and the prior; both answer as the
    model would, the baseline with its own output and interval, the prior with the labels'."""
    made = projects["xgboost"]
    schema, task = made.schema, made.schema.target.task
    directory = made.path("model")
    served = served_from(made)
    rows = evaluated_rows(made).head(20)
    sent = records(rows, schema)

    baseline = fallback.baseline_of(directory, served, INFO)
    assert baseline is not None
    loaded = load_model(directory / BASELINE)
    assert loaded.meta["kind"] == LINEAR[task]
    assert isinstance(baseline.scorer.model, Linear)  # NumPy's maths of its numbers
    output = baseline.output(sent)
    np.testing.assert_allclose(
        output, expected_output(directory / BASELINE, rows, schema), rtol=1e-6, atol=1e-9
    )
    answer = baseline.answer(output).model_dump(mode="json")
    assert answer["model"]["fallback"] == "baseline"
    if task == "regression":  # its own split-conformal interval, not the model's
        width = loaded.half_width()
        assert width > 0
        for prediction in answer["predictions"]:
            low, high = prediction["interval"]
            assert high - low == pytest.approx(2 * width)

    _, labels, _ = read_features(made.path("train.parquet"))
    prior = fallback.prior_of(load_model(directory).meta, served)
    assert prior is not None
    answer = prior.answer(prior.output(sent)).model_dump(mode="json")
    assert answer["model"]["fallback"] == "prior"
    first = answer["predictions"][0]
    assert all(p == first for p in answer["predictions"])
    if task == "regression":  # the mean of the rows the model was fitted on or calibrated with
        assert first["prediction"] == pytest.approx(labels.mean())
    else:
        shares = np.bincount(labels.astype(int), minlength=len(schema.target.labels))
        assert list(first["probabilities"].values()) == pytest.approx(shares / len(labels))
        assert first["label"] in schema.target.labels  # decided as the model decides
