"""The register stage's helpers: where runs go and what they record."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import linear
from pipelines.core.lineage import data_hash, git_state, tracking_uri
from pipelines.core.model import load_model, save_model
from pipelines.params import FeaturizeParams, TrainParams, load_paths, load_section
from pipelines.schema import Schema
from pipelines.stages import register
from pipelines.stages.register import pip_requirements, run_params
from tests.support.columns import PARAMS, ROOT
from tests.support.training import (
    Trained,
    fit_on,
    model_kind,
    saved_meta,
    small_train_params,
)


def test_tracking_uri_defaults_to_a_sqlite_store_inside_the_repo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(Path("store")) == "sqlite:///store/mlflow.db"


def test_mlflow_tracking_uri_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(Path("store")) == "http://127.0.0.1:5000"


def test_a_run_from_a_commit_is_clean_though_the_pipeline_wrote_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "eval").mkdir()
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "first")
    monkeypatch.chdir(tmp_path)
    outputs = ("dvc.lock", Path("eval/metrics.json"), Path("eval/plots"))
    # the stages before register wrote the lock, the metrics and the plots
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "eval/metrics.json").write_text("{}\n")
    (tmp_path / "eval/plots").mkdir()
    (tmp_path / "eval/plots/roc.json").write_text("[]\n")
    state = git_state(outputs)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert state == {"git_commit": head, "git_dirty": "False"}
    assert git_state()["git_dirty"] == "True"  # the bento's build counts every change
    (tmp_path / "params.yaml").write_text("seed: 2\n")  # what the run ran is not committed
    assert git_state(outputs)["git_dirty"] == "True"


def test_data_hash_is_the_md5_recorded_in_the_dvc_file(tmp_path: Path) -> None:
    dvc_file = tmp_path / "data.dvc"
    dvc_file.write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")
    assert data_hash(dvc_file) == "0123abcd.dir"


def logged_params(kind: str) -> dict[str, object]:
    """What register logs to MLflow for the committed params with ``train.model: kind``."""
    train = load_section("train", TrainParams, PARAMS)
    return run_params(
        TrainParams.model_validate(train.model_dump(mode="json") | {"model": kind}),
        load_section("featurize", FeaturizeParams, PARAMS),
    )


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression"])
def test_run_params_hold_only_the_chosen_model_s_hyperparameters(kind: str) -> None:
    logged = logged_params(kind)
    other = "logistic_regression" if kind == "xgboost" else "xgboost"
    assert logged["model"] == kind
    assert any(key.startswith(f"{kind}.") for key in logged)
    assert not any(key.startswith(f"{other}.") for key in logged)
    assert {"seed", "test_size", "split_seed", "threshold"} <= logged.keys()


@pytest.mark.parametrize("kind", ["dummy", "ridge"])
def test_run_params_of_a_baseline_hold_its_section_or_none(kind: str) -> None:
    logged = logged_params(kind)
    assert logged["model"] == kind
    mine = {key for key in logged if key.startswith(f"{kind}.")}
    assert mine == ({"ridge.alpha"} if kind == "ridge" else set())
    assert not any(key.startswith(("xgboost.", "logistic_regression.")) for key in logged)


def test_an_unset_xgboost_option_is_no_param() -> None:
    train = load_section("train", TrainParams, PARAMS)
    logged = logged_params("xgboost")
    assert ("xgboost.objective" in logged) == (train.xgboost.objective is not None)


REFUSE = {"sklearn", "skops"}  # what a lean environment lacks (the image's serve group)


def saved(raw: pd.DataFrame, schema: Schema, kind: str, directory: Path) -> Trained:
    """A small model of ``kind`` ("xgboost" or "linear"), saved in ``directory`` as train does."""
    trained = fit_on(raw, schema, small_train_params(model_kind(kind, schema.target.task)))
    meta = saved_meta(schema, list(trained.x_test.columns))
    save_model(trained.model, model_kind(kind, schema.target.task), meta, directory)
    return trained


def names(requirements: list[str]) -> set[str]:
    assert all(r.count("==") == 1 for r in requirements), requirements  # pinned
    return {r.split("==")[0] for r in requirements}


@pytest.mark.parametrize("kind", ["xgboost", "linear"])
def test_the_registered_model_scores_raw_rows_with_its_requirements_alone(
    kind: str, raw: pd.DataFrame, schema: Schema, tmp_path: Path
) -> None:
    """Trees need XGBoost, a linear model NumPy: neither needs scikit-learn or skops.

    The logged model is loaded and scored in a process whose scikit-learn and skops imports
    fail, and gives what the fitted model gives for the same raw rows.
    """
    import mlflow

    trained = saved(raw, schema, kind, tmp_path / "model")
    requirements = pip_requirements(load_model(tmp_path / "model"))
    assert not {"scikit-learn", "skops"} & names(requirements)
    assert ("xgboost-cpu" in names(requirements)) == (kind == "xgboost")
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=register.PYFUNC,
        artifacts={
            "model": str(tmp_path / "model"),
            "schema": str(ROOT / load_paths(PARAMS).schema_),
        },
        code_paths=[str(ROOT / "pipelines")],
        signature=register.raw_signature(schema),
        pip_requirements=requirements,
    )
    rows = trained.test_raw.head(20)
    example = register.raw_example(raw, schema, rows[schema.id].tolist())
    example.to_parquet(tmp_path / "rows.parquet")
    script = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {REFUSE!r}:\n"
        "            raise ImportError(f'{name} is not in this environment')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import mlflow, pandas as pd\n"
        "d = sys.argv[1]\n"
        "model = mlflow.pyfunc.load_model(d + '/pyfunc')\n"
        "got = model.predict(pd.read_parquet(d + '/rows.parquet'))\n"
        "pd.DataFrame(got).to_csv(d + '/got.csv', index=False)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = pd.read_csv(tmp_path / "got.csv").to_numpy()
    expected = trained.predict(rows, schema)
    if schema.target.task == "binary":
        np.testing.assert_allclose(got[:, 0].astype(np.float64), expected, rtol=1e-6, atol=1e-9)
    else:  # the batch scorer's columns: the prediction or probabilities follow the label
        numbers = got[:, 1:] if schema.target.task == "multiclass" else got[:, :1]
        np.testing.assert_allclose(
            numbers.astype(np.float64), expected.reshape(len(rows), -1), rtol=1e-6, atol=1e-9
        )


def test_a_pipeline_of_other_steps_requires_scikit_learn_and_skops(
    raw: pd.DataFrame, schema: Schema, tmp_path: Path
) -> None:
    saved(raw, schema, "linear", tmp_path / "model")
    (tmp_path / "model" / linear.FILE).unlink()  # what a pipeline with no linear numbers saves
    assert {"scikit-learn", "skops"} <= names(pip_requirements(load_model(tmp_path / "model")))


def test_the_signature_is_the_schemas_feature_columns_typed_as_read_raw_reads_them(
    schema: Schema,
) -> None:
    signature = register.raw_signature(schema)
    inputs = signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == list(schema.features)
    for column in inputs:
        feature = schema.features[column["name"]]
        if feature.type == "category":
            assert column["type"] == "string"
        else:  # MLflow turns no int64 into a double: whole numbers are long unless nullable
            whole = feature.type == "integer" and not feature.nullable
            assert column["type"] == ("long" if whole else "double"), column
    assert signature.outputs.to_dict() == expected_outputs(schema)


def expected_outputs(schema: Schema) -> list[dict[str, object]]:
    """What the registered model answers per row, as MLflow writes its columns.

    Binary: one unnamed probability; regression: the batch scorer's prediction and interval;
    multiclass: its label (whole numbers or text, as the classes are) and each class's
    probability.
    """
    target = schema.target
    if target.task == "binary":
        return [{"type": "double", "required": True}]
    if target.task == "regression":
        names = ["prediction", "low", "high"]
        return [{"type": "double", "name": name, "required": True} for name in names]
    whole = all(isinstance(c, int) and not isinstance(c, bool) for c in target.labels)
    label = {"type": "long" if whole else "string", "name": "label", "required": True}
    return [label] + [
        {"type": "double", "name": f"probability_{c}", "required": True} for c in target.labels
    ]


def test_the_input_example_is_raw_rows_of_the_given_ids_in_order(
    raw: pd.DataFrame, schema: Schema
) -> None:
    ids = list(raw[schema.id].iloc[[7, 2, 5]])
    example = register.raw_example(raw, schema, ids)
    assert list(example.columns) == list(schema.features)
    expected = raw.set_index(schema.id).loc[ids, list(schema.features)].reset_index(drop=True)
    pd.testing.assert_frame_equal(example, expected, check_dtype=False)
    for name, feature in schema.features.items():
        kind = example[name].dtype.kind
        assert kind == {"string": "O", "long": "i", "double": "f"}[register.column_type(feature)]
