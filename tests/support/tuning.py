"""A small project to tune: params.yaml with its comments, a table, the featurize stage's rows.

The search's settings are small so that a study runs in seconds: few trees, two folds, a few
trials. The current params are weak on purpose (one split per tree, few trees, a slow learning
rate), so that a search beats them and writes params.yaml.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.stages import featurize
from tests.support.columns import PARAMS

ROWS = 2000  # of the table, at most: enough rows for two folds of every class
WEAK = {"n_estimators": 10, "max_depth": 1, "learning_rate": 0.02}
HELD_OUT = "held_out.parquet"
# replace the committed ranges: small forests, quick to fit
SMALL_SPACE = {"n_estimators": {"low": 10, "high": 30}, "max_depth": {"low": 1, "high": 4}}


def edit(path: Path, changes: dict[tuple[str, ...], Any]) -> None:
    """Set keys of a YAML file, keeping its comments (ruamel.yaml round trip)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True  # a quoted segment such as "Has Card?" stays quoted
    rt.width = 100
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = rt.load(path.read_text())
    for keys, value in changes.items():
        node = document
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    stream = io.StringIO()
    rt.dump(document, stream)
    path.write_text(stream.getvalue())


def tune_project(
    root: Path,
    raw: pd.DataFrame,
    schema_text: str,
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[tuple[str, ...], Any] | None = None,
) -> Path:
    """A project in ``root`` (the working directory from now on): the committed params.yaml
    with small settings and ``changes``, the schema, a sample of ``raw``, its training rows.

    The featurize stage's test rows are moved to ``held_out.parquet``, a name params do not say:
    a search that read ``paths.test`` would fail.

    Returns:
        The project's params.yaml.
    """
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    raw.sample(min(len(raw), ROWS), random_state=0).to_csv(root / "raw.csv", index=False)
    (root / "schema.yaml").write_text(schema_text)
    params = root / "params.yaml"
    params.write_text(PARAMS.read_text())
    settings: dict[tuple[str, ...], Any] = {
        ("paths", "raw"): "raw.csv",
        ("paths", "schema"): "schema.yaml",
        ("paths", "train"): "train.parquet",
        ("paths", "test"): "test.parquet",
        ("paths", "mlflow"): "mlruns",
        ("engine", "kind"): "local",
        ("train", "model"): "xgboost",
        **{("train", "xgboost", key): value for key, value in WEAK.items()},
        ("tune", "trials"): 3,
        ("tune", "folds"): 2,
        **{("tune", "space", "xgboost", k): v for k, v in SMALL_SPACE.items()},
    }
    edit(params, settings | (changes or {}))
    argv = ["--raw", "raw.csv", "--schema", "schema.yaml"]
    assert featurize.main([*argv, "--train", "train.parquet", "--test", "test.parquet"]) == 0
    (root / "test.parquet").rename(root / HELD_OUT)
    return params
