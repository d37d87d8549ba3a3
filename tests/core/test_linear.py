"""A linear model's numbers give scikit-learn's outputs and contributions, and load without it.

Every expectation is scikit-learn's own computation on the fitted pipeline (its steps'
``transform``, ``predict``, ``decision_function``), never the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from pipelines.core import linear
from pipelines.core.linear import Linear
from pipelines.core.metrics import Task
from pipelines.core.model import load_model, make_model, predict, save_model
from tests.support.columns import ROOT
from tests.support.training import small_train_params

COLUMNS = ["a", "b", "c"]
CASES = [
    ("binary", "logistic_regression"),
    ("multiclass", "logistic_regression"),
    ("regression", "ridge"),
    ("binary", "dummy"),
    ("multiclass", "dummy"),
    ("regression", "dummy"),
]


def table(task: Task, rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three columns, one with missing values; a label of ``task`` that depends on two."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, 3)) * [1, 5, 50] + [0, 10, 0], columns=COLUMNS)
    signal = x["a"] + 0.2 * x["b"] + rng.normal(scale=0.5, size=rows)
    x.loc[x.index[::7], "b"] = np.nan
    if task == "regression":
        return x, signal.to_numpy()
    cuts = [2.0] if task == "binary" else [1.0, 2.5, 3.5]
    y = np.digitize(signal, cuts)
    if task == "multiclass":
        y[y == 3] = 2  # keep three classes, the last one rarer
    return x, y


def fitted(task: Task, kind: str):
    x, y = table(task)
    return make_model(small_train_params(kind), task).fit(x, y), x


@pytest.mark.parametrize(("task", "kind"), CASES)
def test_the_numbers_give_scikit_learns_output(task: Task, kind: str) -> None:
    model, _ = fitted(task, kind)
    x, _ = table(task, rows=100, seed=1)
    numbers = linear.of(model, task, len(COLUMNS))
    assert numbers is not None
    expected = np.asarray(predict(model, x, task), dtype=np.float64)
    np.testing.assert_allclose(numbers.output(x.to_numpy()), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(predict(numbers, x, task), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("task", "kind"), [c for c in CASES if c[1] != "dummy"])
def test_contributions_are_coefficient_times_scaled_input(task: Task, kind: str) -> None:
    model, _ = fitted(task, kind)
    x, _ = table(task, rows=50, seed=2)
    imputer, scaler, estimator = (step for _, step in model.steps)
    scaled = scaler.transform(imputer.transform(x))
    coefficients = np.atleast_2d(estimator.coef_)
    pick = np.arange(len(x)) % len(coefficients)
    margins = (
        estimator.predict(scaled) if task == "regression" else estimator.decision_function(scaled)
    )
    margins = np.asarray(margins).reshape(len(x), -1)[np.arange(len(x)), pick]

    contributions, base, margin = linear.of(model, task, 3).contributions(x.to_numpy(), pick)

    np.testing.assert_allclose(margin, margins, rtol=1e-9)
    np.testing.assert_allclose(base + contributions.sum(axis=1), margins, rtol=1e-9)
    np.testing.assert_allclose(base, np.atleast_1d(estimator.intercept_)[pick])
    # column b's missing-value indicator (the 4th input) counts towards b
    flags = scaled[:, 3] * coefficients[pick, 3]
    np.testing.assert_allclose(contributions[:, 1], scaled[:, 1] * coefficients[pick, 1] + flags)
    np.testing.assert_allclose(contributions[:, 0], scaled[:, 0] * coefficients[pick, 0])


@pytest.mark.parametrize(("task", "kind"), [c for c in CASES if c[1] == "dummy"])
def test_the_dummy_looks_at_no_column(task: Task, kind: str) -> None:
    model, x = fitted(task, kind)
    pick = np.zeros(len(x), dtype=np.intp)
    contributions, base, margin = linear.of(model, task, 3).contributions(x.to_numpy(), pick)
    assert not contributions.any()
    np.testing.assert_array_equal(base, margin)


def test_a_pipeline_of_other_steps_has_no_numbers() -> None:
    x, y = table("binary")
    model = make_pipeline(MinMaxScaler(), make_model(small_train_params("logistic_regression"))[-1])
    assert linear.of(model.fit(x.fillna(0), y), "binary", 3) is None


@pytest.mark.parametrize(("task", "kind"), CASES)
def test_saved_numbers_read_back_the_same(task: Task, kind: str, tmp_path: Path) -> None:
    model, x = fitted(task, kind)
    save_model(model, kind, {"features": COLUMNS, "target": {"task": task}}, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.model, Linear)
    direct = linear.of(model, task, 3)
    assert direct is not None
    np.testing.assert_array_equal(loaded.predict(x), direct.output(x[COLUMNS].to_numpy()))


@pytest.mark.parametrize(
    ("task", "kind"),
    [("multiclass", "logistic_regression"), ("binary", "xgboost"), ("regression", "xgboost")],
)
def test_a_model_loads_scores_and_explains_without_scikit_learn_or_skops(
    task: Task, kind: str, tmp_path: Path
) -> None:
    """What the served image has: no scikit-learn, no skops. Their imports fail here."""
    model, x = fitted(task, kind)
    meta = {"features": COLUMNS, "target": {"task": task}}
    save_model(model, kind, meta, tmp_path / "m")
    x.head(20).to_csv(tmp_path / "rows.csv", index=False)
    expected = np.asarray(predict(model, x.head(20), task))
    np.save(tmp_path / "expected.npy", expected)
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'sklearn', 'skops'}:\n"
        "            raise ImportError(f'{name} is not in the image')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from pipelines.core.model import load_model\n"
        "from pipelines.serving.scoring import Scorer\n"
        "d = sys.argv[1]\n"
        "loaded = load_model(d + '/m')\n"
        "scorer = Scorer.of(loaded, small=True)\n"
        "rows = pd.read_csv(d + '/rows.csv').to_numpy()\n"
        "got = scorer.output(rows)\n"
        "scorer.contributions(rows, np.zeros(len(rows), dtype=np.intp))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in {'sklearn', 'skops'}]\n"
        "np.testing.assert_allclose(got, np.load(d + '/expected.npy'), rtol=1e-6)\n"
        "print('scored', len(got))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "scored 20"
