"""``engine:`` loads typed, with defaults; the Dask engine refuses what it cannot train, early."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.params import EngineParams, ParamsError, TrainParams, load_section
from pipelines.stages import train
from pipelines.stages.dask_engine import EngineError, check_engine
from tests.support.training import small_train_params


def write_params(directory: Path, document: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_defaults_train_locally() -> None:
    engine = EngineParams.model_validate({})
    assert engine == EngineParams(kind="local", partitions=4, workers=2, threads_per_worker=1)
    assert EngineParams.model_validate({"kind": "dask"}).partitions == 4


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"kind": "dask", "partition": 8}, "engine.partition"),
        ({"kind": "spark"}, "engine.kind"),
        ({"kind": "dask", "partitions": 0}, "engine.partitions"),
        ({"kind": "dask", "workers": 0}, "engine.workers"),
        ({"kind": "dask", "threads_per_worker": "two"}, "engine.threads_per_worker"),
        ({"kind": "dask", "scheduler": "tcp://10.0.0.1:8786"}, "engine.scheduler"),
    ],
)
def test_bad_engine_section_names_the_key(tmp_path: Path, section: dict, key: str) -> None:
    path = write_params(tmp_path, {"engine": section})
    with pytest.raises(ParamsError, match=re.escape(f"{key}:")):
        load_section("engine", EngineParams, path)


@pytest.mark.parametrize(
    ("model", "cv_folds", "kind"),
    [("xgboost", 0, "dask"), ("logistic_regression", 0, "local"), ("xgboost", 5, "local")],
)
def test_what_each_engine_trains(model: str, cv_folds: int, kind: str) -> None:
    check_engine(small_train_params(model, cv_folds), EngineParams(kind=kind))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (small_train_params("logistic_regression"), ["engine.kind", "train.model"]),
        (small_train_params("xgboost", cv_folds=5), ["engine.kind", "train.cv_folds: 0"]),
    ],
)
def test_dask_refuses_what_it_cannot_train(params: TrainParams, words: list[str]) -> None:
    with pytest.raises(EngineError) as error:
        check_engine(params, EngineParams(kind="dask"))
    assert all(word in str(error.value) for word in words), error.value


def test_the_stage_refuses_before_reading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "train": small_train_params("logistic_regression").model_dump(mode="json"),
        "engine": {"kind": "dask"},
    }
    write_params(tmp_path, document)
    monkeypatch.chdir(tmp_path)
    missing = ["--train", "absent.parquet", "--raw", "absent.csv", "--schema", "absent.yaml"]
    missing += ["--out", "model"]
    with pytest.raises(EngineError, match=re.escape("train.model: xgboost")):
        train.main(missing)
    assert not (tmp_path / "model").exists()
