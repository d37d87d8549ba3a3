"""Both model kinds fit, cross-validate, and survive a save/load round trip without pickle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

from pipelines.core import linear
from pipelines.core.model import (
    FILES,
    META,
    LoadedModel,
    Model,
    load_model,
    make_model,
    save_model,
)
from pipelines.stages.train import cross_validate, fit
from tests.support.columns import ROOT
from tests.support.training import small_train_params

KINDS = ["xgboost", "logistic_regression"]
FEATURES = ["a", "b", "noise"]


def separable(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two informative features (one with missing values), one noise feature."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({name: rng.normal(size=rows) for name in FEATURES}).astype(np.float32)
    y = (x["a"] + 0.5 * x["b"] > 0).to_numpy().astype(np.int8)
    x.loc[x.index[::9], "b"] = np.nan
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    x, y = separable(400, seed=1)
    x_test, y_test = separable(200, seed=2)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def models(data: tuple) -> dict[str, Model]:
    """One fitted model of each kind, shared: fitting is the slow part."""
    x, y, _, _ = data
    return {kind: fit(x, y, small_train_params(kind)) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_make_model_builds_the_named_kind(kind: str) -> None:
    model = make_model(small_train_params(kind))
    if kind == "xgboost":
        assert type(model).__name__ == "XGBClassifier"
        assert model.get_params()["n_estimators"] == 20
    else:
        assert type(model[-1]).__name__ == "LogisticRegression"
        assert model[-1].C == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_fit_separates_a_separable_problem(
    kind: str, data: tuple, models: dict[str, Model]
) -> None:
    _, _, x_test, y_test = data
    model = models[kind]
    p = model.predict_proba(x_test)

    assert p.shape == (len(x_test), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert roc_auc_score(y_test, p[:, 1]) > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_cross_validate_scores_each_fold(kind: str, data: tuple) -> None:
    x, y, _, _ = data
    scores = cross_validate(x, y, small_train_params(kind, cv_folds=3))

    assert set(scores) == {"cv_roc_auc_mean", "cv_roc_auc_std"}
    assert 0.9 < scores["cv_roc_auc_mean"] <= 1.0
    assert 0.0 <= scores["cv_roc_auc_std"] < 0.1
    assert scores == cross_validate(x, y, small_train_params(kind, cv_folds=3))  # seeded


@pytest.mark.parametrize("cv_folds", [0, 1])
def test_cross_validate_off_below_two_folds(cv_folds: int, data: tuple) -> None:
    x, y, _, _ = data
    assert cross_validate(x, y, small_train_params("xgboost", cv_folds=cv_folds)) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(
    kind: str, data: tuple, models: dict[str, Model], tmp_path: Path
) -> None:
    x, _, x_test, _ = data
    model = models[kind]
    directory = tmp_path / "model"
    meta = {"features": list(x.columns), "train_rows": len(x), "cv": {}}

    save_model(model, kind, meta, directory)
    loaded = load_model(directory)

    # a linear model's numbers beside its skops file: what is read back (pipelines.core.linear)
    numbers = [] if kind == "xgboost" else [linear.FILE]
    assert sorted(p.name for p in directory.iterdir()) == sorted([META, FILES[kind], *numbers])
    assert loaded.meta == {"kind": kind, "file": FILES[kind], **meta}
    assert isinstance(loaded, LoadedModel)
    # float32 rows: scikit-learn computes in float32, the numbers in float64
    np.testing.assert_allclose(
        loaded.predict(x_test), model.predict_proba(x_test)[:, 1], rtol=1e-6, atol=1e-7
    )
    # the saved feature order is used, whatever the caller's column order
    reordered = x_test[list(reversed(x_test.columns))]
    np.testing.assert_array_equal(loaded.predict(reordered), loaded.predict(x_test))
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_model_saved_in_two_processes_is_the_same_bytes(
    kind: str, data: tuple, models: dict[str, Model], tmp_path: Path
) -> None:
    """DVC hashes the model's files: a model refitted identically must not look new (a stale
    dvc.lock). skops names objects by id() and stamps zip entries with the time: neither may
    reach the file."""
    x, _, _, _ = data
    save_model(models[kind], kind, {"features": list(x.columns)}, tmp_path / "here")
    script = (
        "import sys, pandas as pd\n"
        "from pipelines.core.model import save_model\n"
        "from pipelines.stages.train import fit\n"
        "from tests.stages.test_train import separable\n"
        "from tests.support.training import small_train_params\n"
        "x, y = separable(400, seed=1)\n"
        f"save_model(fit(x, y, small_train_params({kind!r})), {kind!r}, "
        "{'features': list(x.columns)}, __import__('pathlib').Path(sys.argv[1]))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], check=True, cwd=ROOT)
    for name in (FILES[kind], META, *([] if kind == "xgboost" else [linear.FILE])):
        here, there = (tmp_path / d / name for d in ("here", "there"))
        assert here.read_bytes() == there.read_bytes(), name


def test_save_replaces_a_previous_model(
    data: tuple, models: dict[str, Model], tmp_path: Path
) -> None:
    x, _, x_test, _ = data
    directory = tmp_path / "model"
    meta = {"features": list(x.columns)}
    save_model(models["xgboost"], "xgboost", meta, directory)

    baseline = models["logistic_regression"]
    save_model(baseline, "logistic_regression", meta, directory)

    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [META, FILES["logistic_regression"], linear.FILE]
    )
    np.testing.assert_allclose(
        load_model(directory).predict(x_test),
        baseline.predict_proba(x_test)[:, 1],
        rtol=1e-6,
        atol=1e-7,
    )


def passthrough(x: object) -> object:
    """A function of our own: skops must not trust it, as it would any code outside sklearn."""
    return x


def test_load_refuses_types_skops_does_not_trust(data: tuple, tmp_path: Path) -> None:
    x, y, _, _ = data
    smuggled = make_pipeline(FunctionTransformer(passthrough), LogisticRegression())
    smuggled.fit(x.fillna(0), y)
    save_model(smuggled, "logistic_regression", {"features": list(x.columns)}, tmp_path / "m")

    # skops raises UntrustedTypesFoundException, a TypeError, naming the type
    with pytest.raises(TypeError, match="passthrough"):
        load_model(tmp_path / "m")


def test_load_accepts_other_scikit_learn_estimators(data: tuple, tmp_path: Path) -> None:
    x, y, x_test, _ = data
    model = make_pipeline(MinMaxScaler(), LogisticRegression()).fit(x.fillna(0), y)
    save_model(model, "logistic_regression", {"features": list(x.columns)}, tmp_path / "m")
    np.testing.assert_array_equal(
        load_model(tmp_path / "m").predict(x_test.fillna(0)),
        model.predict_proba(x_test.fillna(0))[:, 1],
    )


@pytest.mark.parametrize(
    ("model", "kind", "meta"),
    [
        pytest.param(LogisticRegression(), "xgboost", {}, id="not-an-xgboost-model"),
        pytest.param(LogisticRegression(), "random_forest", {}, id="unknown-kind"),
        pytest.param(
            LogisticRegression(),
            "logistic_regression",
            {"cv": {"cv_roc_auc_mean": float("nan")}},
            id="meta-fails-after-model-file",
        ),
    ],
)
def test_failed_save_leaves_the_previous_model(
    model: object,
    kind: str,
    meta: dict,
    models: dict[str, Model],
    tmp_path: Path,
) -> None:
    directory = tmp_path / "model"
    save_model(models["xgboost"], "xgboost", {"features": FEATURES}, directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    with pytest.raises((AttributeError, KeyError, ValueError)):
        save_model(model, kind, meta, directory)

    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert load_model(directory).meta["kind"] == "xgboost"
