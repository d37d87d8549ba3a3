"""``params.yaml`` loads into frozen typed sections, and a typo fails with the key's name."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from pipelines.params import (
    AlertingParams,
    CanaryParams,
    CardParams,
    DataParams,
    EngineParams,
    EvaluateParams,
    FairnessParams,
    FeaturizeParams,
    GateParams,
    MonitorParams,
    ParamsError,
    Paths,
    RegisterParams,
    Section,
    ServeParams,
    TrainParams,
    TuneParams,
    ValueParams,
    load_optional,
    load_paths,
    load_section,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "params.yaml"
SECTIONS: dict[str, type[Section]] = {
    "paths": Paths,
    "data": DataParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
    "tune": TuneParams,
    "engine": EngineParams,
    "evaluate": EvaluateParams,
    "value": ValueParams,
    "fairness": FairnessParams,
    "register": RegisterParams,
    "serve": ServeParams,
    "monitor": MonitorParams,
    "gate": GateParams,
    "alerting": AlertingParams,
    "canary": CanaryParams,
    "card": CardParams,
}

TRAIN = {
    "model": "xgboost",
    "seed": 7,
    "cv_folds": 0,
    "xgboost": {
        "n_estimators": 10,
        "max_depth": 3,
        "learning_rate": 0.1,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "min_child_weight": 1.0,
        "reg_lambda": 1.0,
    },
    "logistic_regression": {"C": 1.0, "max_iter": 100},
}


def write_params(directory: Path, document: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def with_change(section: dict, dotted: str, value: object) -> dict:
    """A deep copy of ``section`` with the key at ``dotted`` set (or added) to ``value``."""
    copy = yaml.safe_load(yaml.safe_dump(section))
    *parents, leaf = dotted.split(".")
    node = copy
    for part in parents:
        node = node[part]
    node[leaf] = value
    return copy


def without(section: dict, dotted: str) -> dict:
    copy = yaml.safe_load(yaml.safe_dump(section))
    *parents, leaf = dotted.split(".")
    node = copy
    for part in parents:
        node = node[part]
    del node[leaf]
    return copy


def test_valid_section_loads_typed_and_frozen(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"featurize": {"test_size": 0.25, "seed": 3}, "train": TRAIN})

    featurize = load_section("featurize", FeaturizeParams, path)
    train = load_section("train", TrainParams, path)

    assert featurize == FeaturizeParams(test_size=0.25, seed=3)
    assert train.xgboost.n_estimators == 10
    assert train.logistic_regression.C == 1.0
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        featurize.seed = 4  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        train.xgboost.max_depth = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("document", "key"),
    [
        pytest.param(
            {"train": with_change(without(TRAIN, "xgboost.max_depth"), "xgboost.max_dept", 3)},
            "train.xgboost.max_dept",
            id="misspelt-nested-key",
        ),
        pytest.param(
            {"train": with_change(TRAIN, "cv_fold", 5)},
            "train.cv_fold",
            id="unknown-top-key",
        ),
        pytest.param(
            {"train": without(TRAIN, "seed")},
            "train.seed",
            id="missing-key",
        ),
        pytest.param(
            {"train": with_change(TRAIN, "model", "random_forest")},
            "train.model",
            id="model-not-a-choice",
        ),
        pytest.param(
            {"train": with_change(TRAIN, "xgboost.learning_rate", 0)},
            "train.xgboost.learning_rate",
            id="learning-rate-zero",
        ),
        pytest.param(
            {"train": with_change(TRAIN, "cv_folds", -1)},
            "train.cv_folds",
            id="negative-folds",
        ),
    ],
)
def test_bad_train_section_names_the_key(tmp_path: Path, document: dict, key: str) -> None:
    path = write_params(tmp_path, document)
    with pytest.raises(ParamsError, match=re.escape(f"{key}:")) as error:
        load_section("train", TrainParams, path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "model", "section", "key"),
    [
        ("featurize", FeaturizeParams, {"test_size": 1.5, "seed": 1}, "featurize.test_size"),
        ("featurize", FeaturizeParams, {"test_size": 0, "seed": 1}, "featurize.test_size"),
        ("featurize", FeaturizeParams, {"test_size": 0.2, "seed": "x"}, "featurize.seed"),
        (
            "evaluate",
            EvaluateParams,
            {"threshold": 0.5, "segments": [], "calibration_bins": 10},
            "evaluate.threshold",
        ),
        (
            "evaluate",
            EvaluateParams,
            {"segments": [], "calibration_bins": 1},
            "evaluate.calibration_bins",
        ),
        ("value", ValueParams, {"currency": "EUR"}, "value"),
        (
            "value",
            ValueParams,
            {"currency": "EUR", "gain": {"tp": 1}, "cost": {"under": 1, "over": 1}},
            "value",
        ),
    ],
)
def test_out_of_range_value_names_the_key(
    tmp_path: Path, name: str, model: type[Section], section: dict, key: str
) -> None:
    path = write_params(tmp_path, {name: section})
    with pytest.raises(ParamsError, match=re.escape(f"{key}:")):
        load_section(name, model, path)


@pytest.mark.parametrize("content", ["featurize:\n  test_size: 0.2\n  seed: 1\n", ""])
def test_missing_section_is_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(ParamsError, match=r"section 'train:' is missing"):
        load_section("train", TrainParams, path)


def test_paths_section_reads_the_schema_alias(tmp_path: Path) -> None:
    paths = yaml.safe_load(COMMITTED.read_text())["paths"]
    path = write_params(tmp_path, {"paths": {**paths, "schema": "elsewhere/schema.yaml"}})
    assert load_paths(path).schema_ == Path("elsewhere/schema.yaml")


OPTIONAL = ("value", "fairness")  # sections a model may leave null


@pytest.mark.parametrize(("name", "model"), SECTIONS.items(), ids=SECTIONS.keys())
def test_committed_params_load(name: str, model: type[Section]) -> None:
    if name in OPTIONAL and yaml.safe_load(COMMITTED.read_text())[name] is None:
        assert load_optional(name, model, COMMITTED) is None  # `value: null`: none stated
        return
    section = load_section(name, model, COMMITTED)
    assert isinstance(section, model)


def test_every_committed_section_has_a_model() -> None:
    """A section without a model would never be checked for typos."""
    assert set(yaml.safe_load(COMMITTED.read_text())) == set(SECTIONS)
