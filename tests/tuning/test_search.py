"""The search: folds by id hash on the training rows only, trial 0 the current params, seeded.

Every expectation comes from the project's schema and params (the gate's first metric of the
task, its direction in the registry), so the tests hold in a repository of any task.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core import features
from pipelines.core.io import PipelineError
from pipelines.core.metrics import METRICS, VALUE
from pipelines.core.model import make_model, predict
from pipelines.core.value import value_model
from pipelines.params import (
    FeaturizeParams,
    GateParams,
    ParamsError,
    TrainParams,
    TuneParams,
    ValueParams,
    load_section,
)
from pipelines.schema import Schema, dump_schema, load_schema
from pipelines.stages import train as train_stage
from pipelines.tuning import search
from tests.support.tuning import HELD_OUT, edit, tune_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    """A small project with its training rows (the test rows put aside)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("search")
        return tune_project(root, raw, dump_schema(schema), monkeypatch).parent


def loaded(project: Path) -> tuple[search.Rows, TrainParams, TuneParams, str]:
    params = project / "params.yaml"
    schema = load_schema(project / "schema.yaml")
    tune = load_section("tune", TuneParams, params)
    rows = search.Rows.of(
        features.read_features(project / "train.parquet"),
        schema.target.task,
        classes=len(schema.target.labels),
        tune=tune,
    )
    metric = search.primary_metric(load_section("gate", GateParams, params), schema.target.task)
    return rows, load_section("train", TrainParams, params), tune, metric


def test_the_folds_hold_every_training_id_once_and_no_test_id(project: Path) -> None:
    rows, train, tune, metric = loaded(project)
    ids = pd.read_parquet(project / "train.parquet")["id"].astype(str).to_numpy()
    held_out = set(pd.read_parquet(project / HELD_OUT)["id"].astype(str))
    raw = pd.read_csv(project / "raw.csv")
    split = load_section("featurize", FeaturizeParams, project / "params.yaml")
    id_column = load_schema(project / "schema.yaml").id
    in_test = features.in_test(raw[id_column], split.test_size, split.seed)
    assert held_out == set(raw[id_column][in_test].astype(str))
    assert held_out
    assert not held_out & set(ids)

    scored: list[np.ndarray] = []
    fitted: list[np.ndarray] = []

    def recording(x, y, fold_rows, params, task, **kwargs):  # type: ignore[no-untyped-def]
        fitted.append(ids[fold_rows[0]])
        scored.append(ids[fold_rows[1]])
        return train_stage.fold_score(x, y, fold_rows, params, task, **kwargs)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(search, "fold_score", recording)
        search.run(rows, train, tune.model_copy(update={"trials": 1}), metric)

    assert len(scored) == tune.folds
    every = np.concatenate(scored)
    assert sorted(every) == sorted(ids)  # each training id scored in exactly one fold
    assert not held_out & set(every)
    assert not held_out & set(np.concatenate(fitted))
    for fit_ids, score_ids in zip(fitted, scored, strict=True):
        assert not set(fit_ids) & set(score_ids)
        assert len(fit_ids) + len(score_ids) == len(ids)


def test_a_row_keeps_its_fold_when_rows_are_added_or_reordered() -> None:
    ids = pd.Series([f"row-{i}" for i in range(3000)])
    folds = features.fold_of(ids, 3, seed=0)
    more = pd.concat([ids, pd.Series([f"new-{i}" for i in range(500)])], ignore_index=True)
    np.testing.assert_array_equal(features.fold_of(more, 3, seed=0)[: len(ids)], folds)
    shuffled = ids.sample(frac=1.0, random_state=1)
    by_id = dict(zip(ids, folds, strict=True))
    assert list(features.fold_of(shuffled, 3, seed=0)) == [by_id[i] for i in shuffled]
    # about a third each, and not the test split over again: the folds have their own salt
    assert set(np.bincount(folds) // 100) <= {9, 10}
    test = features.in_test(ids, 0.2, seed=0)
    assert set(folds[test]) == {0, 1, 2}
    assert not np.array_equal(features.fold_of(ids, 3, seed=1), folds)


def test_trial_0_is_the_current_params_and_the_best_is_never_worse(project: Path) -> None:
    rows, train, tune, metric = loaded(project)
    result = search.run(rows, train, tune, metric)

    searched = tune.space.of(train.model)
    current = {f"{train.model}.{k}": getattr(getattr(train, train.model), k) for k in searched}
    assert result.trials[0].params == current
    assert result.metric == metric
    assert result.better == METRICS[rows.task][metric].better
    sign = METRICS[rows.task][metric].sign
    assert sign * ((result.best.score or 0) - (result.baseline.score or 0)) >= 0
    completed = [t.score for t in result.trials if t.score is not None]
    assert result.best.score == (max if sign > 0 else min)(completed)

    # trial 0's score, computed here: the current model fitted and scored fold by fold
    fold = rows.fold
    expected = []
    for k in range(tune.folds):
        model = make_model(train, rows.task)
        model.fit(rows.x[fold != k], rows.y[fold != k])
        output = predict(model, rows.x[fold == k], rows.task)
        scored = train_stage.predictions(rows.y[fold == k], output, rows.task, rows.classes)
        expected.append(METRICS[rows.task][metric].point(scored))
    np.testing.assert_allclose(result.baseline.folds, expected, rtol=1e-9)


def test_the_same_seed_and_trials_give_the_same_best_params(project: Path) -> None:
    rows, train, tune, metric = loaded(project)
    first = search.run(rows, train, tune, metric)
    again = search.run(rows, train, tune, metric)
    assert first.best.params == again.best.params
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    other = search.run(rows, train, tune.model_copy(update={"seed": tune.seed + 1}), metric)
    assert [t.params for t in other.trials][1:] != [t.params for t in first.trials][1:]


def stated_value(project: Path, schema: Schema) -> dict[str, Any]:
    """The project's value section, or an asymmetric one for its task when it states none."""
    section = yaml.safe_load((project / "params.yaml").read_text()).get("value")
    if section is not None:
        return section
    if schema.target.task == "regression":
        return {"currency": "EUR", "cost": {"under": 3.0, "over": 1.0}}
    if schema.target.task == "binary":
        return {"currency": "EUR", "gain": {"tp": 4.0, "fp": -1.0, "fn": 0.0, "tn": 0.0}}
    names = [str(c) for c in schema.target.labels]
    return {"currency": "EUR", "gain": {a: {a: 1.0 + i} for i, a in enumerate(names)}}


def gain_of(section: dict[str, Any], schema: Schema, actual: int, decided: float) -> float:
    """One row's gain, read from the section as a person would (not through the value model)."""
    if schema.target.task == "regression":
        error = decided - actual
        cost = section["cost"]
        return -(cost["over"] * max(error, 0.0) + cost["under"] * max(-error, 0.0))
    if schema.target.task == "binary":
        cell = {(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}[(actual, int(decided))]
        return float(section["gain"][cell])
    names = [str(c) for c in schema.target.labels]
    return float(section["gain"].get(names[actual], {}).get(names[int(decided)], 0.0))


def test_trials_scored_by_value_earn_what_the_train_stages_decisions_earn(project: Path) -> None:
    """Trial 0's value per fold, computed here: out-of-fold outputs, the threshold by brute force
    over every cut of the pooled out-of-fold probabilities, each row's gain read from params."""
    schema = load_schema(project / "schema.yaml")
    task = schema.target.task
    section = stated_value(project, schema)
    if section.get("amount"):
        section = section | {"amount": None}  # the amount's own test is the evaluate stage's
    edit(project / "params.yaml", {("value",): section, ("train", "threshold"): "value"})
    try:
        params = project / "params.yaml"
        tune = load_section("tune", TuneParams, params)
        train = load_section("train", TrainParams, params)
        value = value_model(load_section("value", ValueParams, params), task, schema.target.labels)
        training = features.read_features(project / "train.parquet")
        rows = search.Rows.of(
            training, task, classes=len(schema.target.labels), tune=tune, value=value
        )
        gate = load_section("gate", GateParams, params)
        metric = search.primary_metric(gate, task, value=True)
        first = next(m for m in gate.metrics if m in METRICS[task] or m == "value_per_1000")
        assert metric == first
        result = search.run(rows, train, tune.model_copy(update={"trials": 1}), VALUE)
    finally:
        edit(project / "params.yaml", {("value",): None})
        edit(project / "params.yaml", {("train", "threshold"): 0.5})

    fold, y = rows.fold, rows.y
    output: list[Any] = [None] * len(y)
    for k in range(tune.folds):
        model = make_model(train, task)
        model.fit(rows.x[fold != k], y[fold != k])
        for i, out in zip(
            np.flatnonzero(fold == k), predict(model, rows.x[fold == k], task), strict=True
        ):
            output[i] = out
    if task == "binary":
        p = np.array(output, dtype=np.float64)
        cuts = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], p]))
        totals = [
            sum(gain_of(section, schema, int(a), float(q >= t)) for a, q in zip(y, p, strict=True))
            for t in cuts
        ]
        best = max(range(len(cuts)), key=lambda j: (totals[j], cuts[j]))  # ties: fewer acted on
        decided = [float(q >= cuts[best]) for q in p]
        assert result.baseline.threshold is not None
        np.testing.assert_array_equal(p >= result.baseline.threshold, p >= cuts[best])
    elif task == "multiclass":
        matrix = np.array(
            [
                [gain_of(section, schema, a, d) for d in range(rows.classes)]
                for a in range(rows.classes)
            ]
        )
        decided = [float(np.argmax(np.asarray(out) @ matrix)) for out in output]
    else:
        decided = [float(out) for out in output]
    gains = np.array(
        [
            gain_of(section, schema, int(a) if task != "regression" else a, d)
            for a, d in zip(y, decided, strict=True)
        ]
    )
    expected = [gains[fold == k].mean() * 1000 for k in range(tune.folds)]
    np.testing.assert_allclose(result.baseline.folds, expected, rtol=1e-9)
    assert result.metric == VALUE
    assert result.better == "higher"


def test_a_value_model_that_is_not_stated_cannot_score_trials() -> None:
    assert (
        search.primary_metric(
            GateParams.model_validate(
                {"resamples": 200, "seed": 0, "confidence": 0.95}
                | {"metrics": {VALUE: {"tolerance": 1}, "f1": {"floor": 0, "tolerance": 0.1}}}
            ),
            "binary",
        )
        == "f1"
    )
    rows = search.Rows(pd.DataFrame(), np.zeros(0), np.zeros(0), "binary", 2)
    with pytest.raises(PipelineError, match="needs a value: section"):
        search.value_scores(rows, np.zeros(0), 1, 0.5)


def test_a_dummy_model_has_nothing_to_tune(project: Path) -> None:
    rows, train, tune, metric = loaded(project)
    with pytest.raises(PipelineError, match=r"^train\.model is dummy.*nothing to tune$"):
        search.run(rows, train.model_copy(update={"model": "dummy"}), tune, metric)


@pytest.mark.parametrize(
    ("entry", "key", "says"),
    [
        ({"max_dpeth": {"low": 2, "high": 8}}, "xgboost.max_dpeth", "not a parameter of"),
        ({"max_depth": {"low": 8, "high": 2}}, "xgboost.max_depth", "not below high"),
        ({"max_depth": {"low": 4, "high": 4}}, "xgboost.max_depth", "not below high"),
        ({"max_depth": {"choices": []}}, "xgboost.max_depth.choices", "at least 1 item"),
        ({"max_depth": {"low": 2.5, "high": 8}}, "xgboost.max_depth", "valid integer"),
        ({"subsample": {"low": 0.5, "high": 2.0}}, "xgboost.subsample", "high 2.0"),
        ({"learning_rate": {"low": 0.0, "high": 0.3, "log": True}}, "xgboost.learning_rate", ""),
        ({"max_depth": {"low": 2}}, "xgboost.max_depth", "needs low and high"),
    ],
)
def test_a_bad_search_space_fails_in_one_line_naming_the_key(
    tmp_path: Path, entry: dict, key: str, says: str
) -> None:
    committed = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    tune = committed["tune"]
    tune["space"]["xgboost"] = entry
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tune": tune}))
    with pytest.raises(ParamsError) as error:
        load_section("tune", TuneParams, path)
    message = str(error.value)
    assert "\n" not in message
    assert re.search(rf": tune\.space\.{re.escape(key)}: [^;]*{re.escape(says)}", message), message
