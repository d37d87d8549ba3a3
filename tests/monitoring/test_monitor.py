"""``make monitor`` on real rows, with a real model and its reference profile.

A small model is trained on the project's table as the pipeline trains it, saved, and profiled as
the profile stage profiles it (train rows, test-row scores); the report then runs on files of
served rows. Shifted columns are picked from the schema, so any table's tests run the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.drift import min_share
from pipelines.core.features import feature_names
from pipelines.core.io import write_json
from pipelines.core.metrics import classification_metrics
from pipelines.core.model import save_model
from pipelines.core.profile import build_profile
from pipelines.monitoring import monitor as report
from pipelines.params import EvaluateParams, MonitorParams, load_paths, load_section
from pipelines.schema import Feature, Schema
from tests.support.columns import PARAMS, ROOT, negative_class, pick
from tests.support.training import Trained, fit_on, small_train_params


@dataclass(frozen=True)
class Project:
    """A trained model, its reference profile and metrics, in a temporary folder."""

    root: Path
    trained: Trained
    test_scores: np.ndarray
    threshold: float
    monitor: MonitorParams
    params: Path

    def run(self, rows: Path, labels: Path | None = None) -> tuple[int, dict[str, Any], str]:
        """Run the report's main; its exit code, JSON and markdown."""
        out = self.root / "out"
        argv = [str(rows), "--markdown", str(out / "m.md"), "--json", str(out / "m.json")]
        argv += ["--params", str(self.params), "--schema", str(ROOT / load_paths(PARAMS).schema_)]
        for name in ("reference", "model", "metrics", "predictions"):
            argv += [f"--{name}", str(self.root / name)]
        if labels is not None:
            argv += ["--labels", str(labels)]
        code = report.main(argv)
        return code, json.loads((out / "m.json").read_text()), (out / "m.md").read_text()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Project:
    root = tmp_path_factory.mktemp("monitor")
    trained = fit_on(raw, schema, small_train_params("xgboost"))
    save_model(trained.model, "xgboost", {"features": feature_names(schema)}, root / "model")
    scores = trained.predict(trained.test_raw, schema)
    # A small table's test split may hold fewer rows than a window needs for a verdict.
    document = yaml.safe_load(PARAMS.read_text())
    document["monitor"]["min_rows"] = min(document["monitor"]["min_rows"], len(trained.test_raw))
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    monitor = load_section("monitor", MonitorParams, params)
    threshold = load_section("evaluate", EvaluateParams, params).threshold
    share = min_share(monitor.min_rows)
    profile = build_profile(
        trained.train_raw, scores, schema, monitor.bins, monitor.score_bins, share=share
    )
    write_json(root / "reference", profile.to_json())
    write_json(root / "metrics", classification_metrics(trained.y_test, scores, threshold))
    pd.DataFrame({"probability": scores}).to_csv(root / "predictions", index=False)
    return Project(root, trained, scores, threshold, monitor, params)


def halved(values: pd.Series, feature: Feature) -> pd.Series:
    """Each value's distance from the lower bound halved: within the schema's range."""
    low = feature.min if feature.min is not None else 0.0
    shifted = low + (pd.to_numeric(values) - low) / 2
    return np.floor(shifted) if feature.type == "integer" else shifted


def test_the_test_rows_show_no_drift(project: Project, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    project.trained.test_raw.to_csv(rows, index=False)

    code, document, markdown = project.run(rows)

    assert (code, document["verdict"], document["exit_code"]) == (0, "no drift", 0)
    assert document["drifting"] == []
    assert not document["score_drift"]
    assert document["rows"] == document["scored"] == len(project.trained.test_raw)
    assert markdown.startswith("🟢 **No drift**")
    assert "```mermaid" not in markdown
    # The rows were scored with the model: the score's fractions are the reference's.
    assert document["score"]["psi"] < 0.01
    assert document["quality"]["estimated"]["rows"] == len(project.trained.test_raw)


def test_two_shifted_features_are_named_exactly(
    project: Project, schema: Schema, tmp_path: Path
) -> None:
    train = project.trained.train_raw
    numeric = [n for n, f in schema.features.items() if f.type != "category"]
    categorical = [n for n, f in schema.features.items() if f.type == "category"]
    if not numeric or not categorical:
        pytest.skip("the schema needs a numeric and a categorical feature")
    number = max(numeric, key=lambda n: train[n].nunique())
    category = categorical[0]
    rarest = train[category].value_counts().reindex(schema.features[category].categories).idxmin()
    rows = project.trained.test_raw.copy()
    rows[number] = halved(rows[number], schema.features[number])
    rows[category] = rarest
    path = tmp_path / "shifted.parquet"
    rows.to_parquet(path)

    code, document, markdown = project.run(path)

    assert (code, document["exit_code"], document["verdict"]) == (1, 1, "drift")
    assert set(document["drifting"]) == {number, category}
    assert [n for n, f in document["features"].items() if f["drift"]] == [
        n for n in schema.features if n in (number, category)
    ]
    for name in (number, category):
        feature = document["features"][name]
        assert feature["psi"] > feature["threshold"]
    assert markdown.splitlines()[0].startswith("🔴 **Drift** in 2 of")
    drawn = document["drifting"] + (["score"] if document["score_drift"] else [])
    assert markdown.count("```mermaid") == len(drawn)
    for name in drawn:
        assert f'title "{name}: served' in markdown
    # The table sorts by PSI over threshold: the two shifted features come first.
    table = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert {table[0].split(" | ")[0][2:], table[1].split(" | ")[0][2:]} <= {
        number,
        category,
        "**score** (model)",
    }


def test_too_few_rows_give_no_verdict(project: Project, tmp_path: Path) -> None:
    rows = tmp_path / "few.csv"
    project.trained.test_raw.head(project.monitor.min_rows - 1).to_csv(rows, index=False)

    code, document, markdown = project.run(rows)

    assert (code, document["exit_code"], document["verdict"]) == (2, 2, "no verdict")
    assert markdown.startswith("⚠️ **No verdict**")
    assert f"{project.monitor.min_rows}" in document["reason"]


def test_a_missing_column_is_named(project: Project, schema: Schema, tmp_path: Path) -> None:
    name = list(schema.features)[-1]
    rows = tmp_path / "rows.csv"
    project.trained.test_raw.drop(columns=[name]).to_csv(rows, index=False)

    code, document, markdown = project.run(rows)

    assert (code, document["exit_code"], document["verdict"]) == (2, 2, "error")
    assert f"missing column {name!r}" in document["reason"]
    assert markdown.startswith("⚠️ **Could not compare**")
    assert name in markdown


def test_rows_that_break_the_schema_are_not_scored(
    project: Project, schema: Schema, tmp_path: Path
) -> None:
    name = pick(schema, "category")
    if name is None:
        pytest.skip("the schema has no categorical feature")
    rows = project.trained.test_raw.copy()
    rows.loc[rows.index[:3], name] = "not a category"
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)

    code, document, _ = project.run(path)

    assert code == 2
    assert f"{name}: expected values in" in document["reason"]
    assert "3 of" in document["reason"]


def write_log(folder: Path, rows: pd.DataFrame, scores: np.ndarray, schema: Schema) -> list[str]:
    """The rows as the service's request log, in two files; their ids."""
    folder.mkdir()
    records = json.loads(rows[list(schema.features)].to_json(orient="records"))
    ids = [f"req-{i // 2}/{i % 2}" for i in range(len(rows))]
    lines = [
        json.dumps(
            {
                "id": ids[i],
                "time": "2025-01-01T00:00:00Z",
                "model_version": "test",
                "record": record,
                "probability": float(scores[i]),
                "label": "ignored",
            }
        )
        for i, record in enumerate(records)
    ]
    half = len(lines) // 2
    (folder / "a.jsonl").write_text("\n".join(lines[:half]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[half:]) + "\n")
    (folder / "notes.txt").write_text("not rows")
    return ids


def test_a_request_log_folder_and_late_labels(
    project: Project, schema: Schema, tmp_path: Path
) -> None:
    rows = project.trained.test_raw
    ids = write_log(tmp_path / "log", rows, project.test_scores, schema)
    known = np.arange(len(rows)) % 3 != 0  # a third of the rows has no label yet
    target = rows[schema.target.column].to_numpy()
    labels = pd.DataFrame({"id": np.array(ids)[known], "label": target[known]})
    labels = pd.concat([labels, pd.DataFrame({"id": ["elsewhere"], "label": [target[0]]})])
    labels.to_csv(tmp_path / "labels.csv", index=False)

    code, document, markdown = project.run(tmp_path / "log", tmp_path / "labels.csv")

    assert code == 0
    assert document["rows"] == len(rows)
    assert document["scored"] == 0
    assert [Path(f).name for f in document["files"]] == ["a.jsonl", "b.jsonl"]
    realised = document["quality"]["realised"]
    assert realised["matched"] == int(known.sum())
    assert realised["unmatched"] == int((~known).sum())
    assert realised["unused_labels"] == 1
    y = (target[known] == schema.target.positive).astype(int)
    expected = classification_metrics(y, project.test_scores[known], project.threshold)
    for name, value in expected.items():
        assert realised["metrics"][name] == pytest.approx(value, rel=1e-6), name
    assert "Realised, from late labels" in markdown


def test_an_unknown_label_is_refused(project: Project, schema: Schema, tmp_path: Path) -> None:
    rows = project.trained.test_raw
    ids = write_log(tmp_path / "log", rows, project.test_scores, schema)
    labels = pd.DataFrame({"id": ids[:3], "label": [negative_class(schema), "maybe", "maybe"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)

    code, document, _ = project.run(tmp_path / "log", tmp_path / "labels.csv")

    assert code == 2
    assert "label 'maybe'" in document["reason"]


def test_the_command_exits_with_the_verdict(project: Project, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    project.trained.test_raw.to_csv(rows, index=False)
    command = [sys.executable, "-m", "pipelines.monitoring.monitor", str(rows)]
    command += ["--markdown", str(tmp_path / "m.md"), "--json", str(tmp_path / "m.json")]
    for name in ("reference", "model", "metrics", "predictions"):
        command += [f"--{name}", str(project.root / name)]
    command += ["--params", str(project.params)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("🟢 No drift")

    done = subprocess.run(
        [*command[:3], str(tmp_path / "absent.csv"), *command[4:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "absent.csv does not exist" in done.stderr
