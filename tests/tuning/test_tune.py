"""``make tune``'s command: params.yaml's train: written with its comments, the reports, MLflow.

One search on a small project of the repository's own table is shared by the tests of what it
wrote; a second one stops on its time limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.core.io import PipelineError
from pipelines.core.metrics import BETTER, METRICS, VALUE, label_of
from pipelines.params import GateParams, TrainParams, load_section
from pipelines.schema import Schema, dump_schema
from pipelines.tuning import tune
from tests.support.tuning import edit, tune_project

CONTRACT = {"metric", "baseline", "best", "params", "trials"}


@dataclass(frozen=True)
class Tuned:
    """A project before and after ``make tune``."""

    root: Path
    before: str  # params.yaml's text
    after: str

    def report(self) -> dict[str, Any]:
        return json.loads((self.root / "reports" / "tune.json").read_text())


def tuned_task(tuned: Tuned) -> str:
    return str(
        yaml.safe_load((tuned.root / "schema.yaml").read_text())["target"].get("task", "binary")
    )


def run(root: Path, *argv: str) -> int:
    reports = [
        "--markdown",
        str(root / "reports/tune.md"),
        "--json",
        str(root / "reports/tune.json"),
    ]
    return tune.main([*reports, *argv])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Tuned:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("tune")
        params = tune_project(root, raw, dump_schema(schema), monkeypatch)
        before = params.read_text()
        assert run(root) == 0
        return Tuned(root, before, params.read_text())


def test_the_report_has_the_contract_keys(tuned: Tuned, schema: Schema) -> None:
    report = tuned.report()
    assert set(report) >= CONTRACT
    gate = load_section("gate", GateParams, tuned.root / "params.yaml")
    task = schema.target.task
    stated = yaml.safe_load(tuned.before).get("value") is not None  # then value counts
    scored = [m for m in gate.metrics if m in METRICS[task] or (m == VALUE and stated)]
    assert report["metric"] == scored[0]
    assert report["trials"] == len(report["history"]) == 3
    assert report["baseline"] == report["history"][0]["score"]
    best = report["history"][report["best_trial"]]
    assert report["best"] == best["score"]
    assert report["params"] == best["params"]
    sign = 1 if BETTER[report["metric"]] == "higher" else -1
    assert sign * (report["best"] - report["baseline"]) > 0  # the weak current params lose


def test_the_best_params_are_written_into_train_and_nothing_else_changes(tuned: Tuned) -> None:
    before, after = yaml.safe_load(tuned.before), yaml.safe_load(tuned.after)
    written = tuned.report()["params"]
    assert tuned.report()["written"] is True
    for name, value in written.items():
        section, key = name.split(".")
        assert after["train"][section][key] == value
        before["train"][section][key] = value
    assert after == before  # every other key, in train: and elsewhere, as it was
    # the comments and the layout stay: only the lines of changed values differ
    old, new = tuned.before.splitlines(), tuned.after.splitlines()
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert 0 < len(changed) <= len(written)
    for a, b in changed:
        assert a.split(":")[0] == b.split(":")[0]
        assert a.partition("#")[2] == b.partition("#")[2]
    load_section("train", TrainParams, tuned.root / "params.yaml")


def test_the_markdown_has_the_table_and_the_chart(tuned: Tuned) -> None:
    text = (tuned.root / "reports" / "tune.md").read_text()
    report = tuned.report()
    assert f"| | current params (trial 0) | best (trial {report['best_trial']}) |" in text
    assert "\nxychart-beta\n" in text
    for name in report["params"]:
        assert f"| `{name}` |" in text
    completed = [str(t["number"]) for t in report["history"] if t["score"] is not None]
    assert f'x-axis "trial" [{", ".join(completed)}]' in text
    baseline, best = report["baseline"], report["best"]
    if report["metric"] == VALUE:  # money in whole units, and the threshold each decided at
        said = f"| {baseline:,.0f} | {best:,.0f} |"
        thresholds = [report["history"][n]["threshold"] for n in (0, report["best_trial"])]
        assert all(t is not None for t in thresholds) == (tuned_task(tuned) == "binary")
    else:
        said = f"| {baseline:.4f} | {best:.4f} |"
    assert f"| **{label_of(report['metric'])}**, mean over the folds {said}" in text


def test_every_trial_is_an_mlflow_run_under_one_parent(tuned: Tuned) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tuned.root / 'mlruns' / 'mlflow.db'}")
    experiment = yaml.safe_load(tuned.after)["register"]["experiment"]
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "tune"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == [f"trial {n}" for n in range(3)]
    metric = tuned.report()["metric"]
    first = next(r for r in children if r.info.run_name == "trial 0")
    assert first.data.metrics[metric] == pytest.approx(tuned.report()["baseline"])


def test_a_time_limit_stops_the_search_and_still_writes_the_best_so_far(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tune_project(tmp_path, raw, dump_schema(schema), monkeypatch)
    assert run(tmp_path, "--trials", "50", "--timeout", "0.01") == 0
    report = json.loads((tmp_path / "reports" / "tune.json").read_text())
    assert report["stopped_by"] == "timeout"
    assert 1 <= report["trials"] < 50
    train = yaml.safe_load(params.read_text())["train"]
    for name, value in report["params"].items():
        section, key = name.split(".")
        assert train[section][key] == value
    assert (tmp_path / "reports" / "tune.md").is_file()


def test_a_dummy_model_stops_before_any_work(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tune_project(tmp_path, raw, dump_schema(schema), monkeypatch)
    edit(params, {("train", "model"): "dummy"})
    with pytest.raises(PipelineError, match="nothing to tune"):
        run(tmp_path)
    assert not (tmp_path / "reports").exists()


def test_a_float_keeps_its_dot_and_a_null_stays_null(tmp_path: Path) -> None:
    """What YAML 1.1 readers (PyYAML, DVC) read back as the same number and as null."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  ridge:\n    alpha: 1.0  # why\n    other: null\n")
    tune.write_train_params(path, {"ridge.alpha": 1e-05})
    text = path.read_text()
    assert re.fullmatch(r"train:\n  ridge:\n    alpha: 1\.0e-05 +# why\n    other: null\n", text)
    assert yaml.safe_load(path.read_text())["train"]["ridge"]["alpha"] == 1e-05
    with pytest.raises(PipelineError, match=r"train\.ridge\.beta"):
        tune.write_train_params(path, {"ridge.beta": 2.0})


def test_a_quoted_value_stays_quoted(tmp_path: Path) -> None:
    """A segment named "Has Card?" unquoted in a flow list is no longer YAML."""
    path = tmp_path / "params.yaml"
    path.write_text(
        'evaluate:\n  segments: ["Región", "Has Card?"]\ntrain:\n  ridge:\n    alpha: 1.0\n'
    )
    tune.write_train_params(path, {"ridge.alpha": 2.0})
    assert yaml.safe_load(path.read_text())["evaluate"]["segments"] == ["Región", "Has Card?"]
