"""``make monitor`` on real rows, with a real model and its reference profile.

A small model is trained on the project's table as the pipeline trains it, saved, and profiled as
the profile stage profiles it (train rows, test-row scores); the report then runs on files of
served rows. Shifted columns are picked from the schema, so any table's tests run the same, and
the served outputs and late labels are the schema's task's: a binary model's probability, a
multiclass model's probabilities, a regression's prediction and interval; labels in the data's
own terms. The expected metrics are computed here with scikit-learn, not by the monitor's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as sk

from pipelines.core.drift import chi2_quantile, min_share
from pipelines.core.features import feature_names
from pipelines.core.io import write_json
from pipelines.core.metrics import (
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    evaluation_metrics,
)
from pipelines.core.model import monitored_score, read_threshold, save_model
from pipelines.core.profile import build_profile
from pipelines.monitoring import monitor as report
from pipelines.monitoring import retrain
from pipelines.params import MonitorParams, load_paths, load_section
from pipelines.schema import Feature, Schema
from tests.support.columns import PARAMS, ROOT, pick
from tests.support.training import Trained, fit_on, small_train_params

COVERAGE = 0.9  # of the regression's interval on the test rows (its half-width's quantile)


@dataclass(frozen=True)
class Project:
    """A trained model, its reference profile and metrics, in a temporary folder."""

    root: Path
    trained: Trained
    output: np.ndarray  # the model's output on the test rows (a probability, per class, a value)
    half_width: float  # a regression's interval: the prediction -/+ this (0 for a classifier)
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


def predictions_of(
    trained: Trained, schema: Schema, output: np.ndarray, threshold: float, half_width: float
) -> Predictions:
    """The test rows' predictions as the evaluate stage makes them."""
    ids = trained.test_raw[schema.id].to_numpy()
    if trained.task == "multiclass":
        return MulticlassPredictions.of(ids, trained.y_test, output, schema.target.labels)
    if trained.task == "regression":
        low, high = output - half_width, output + half_width
        return RegressionPredictions(ids, trained.y_test, output, low, high)
    return BinaryPredictions.at_threshold(ids, trained.y_test, output, threshold)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Project:
    root = tmp_path_factory.mktemp("monitor")
    trained = fit_on(raw, schema, small_train_params("xgboost"))
    output = trained.predict(trained.test_raw, schema)
    meta: dict[str, Any] = {
        "features": feature_names(schema),
        "target": schema.target.model_dump(mode="json", exclude_defaults=True),
        "decision": {"threshold": 0.4},  # not 0.5: the monitor must decide at the model's own
    }
    half_width = 0.0
    if trained.task == "regression":
        half_width = float(np.quantile(np.abs(output - trained.y_test), COVERAGE))
        meta["interval"] = {"coverage": COVERAGE, "half_width": half_width}
    save_model(trained.model, "xgboost", meta, root / "model")
    # A small table's test split may hold fewer rows than a window needs for a verdict.
    document = yaml.safe_load(PARAMS.read_text())
    document["monitor"]["min_rows"] = min(document["monitor"]["min_rows"], len(trained.test_raw))
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    monitor = load_section("monitor", MonitorParams, params)
    threshold = read_threshold(root / "model")
    share = min_share(monitor.min_rows)
    scores = monitored_score(output, trained.task)
    profile = build_profile(
        trained.train_raw, scores, schema, monitor.bins, monitor.score_bins, share=share
    )
    write_json(root / "reference", profile.to_json())
    predictions = predictions_of(trained, schema, output, threshold, half_width)
    write_json(root / "metrics", evaluation_metrics(predictions, threshold))
    predictions.to_frame().to_csv(root / "predictions", index=False)
    return Project(root, trained, output, half_width, threshold, monitor, params)


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
    estimated = document["quality"]["estimated"]
    if project.trained.task == "regression":  # a prediction says nothing of its own error
        assert estimated is None
    else:
        assert estimated["rows"] == len(project.trained.test_raw)


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


def test_each_threshold_is_the_rule_at_the_models_split_rate(
    project: Project, tmp_path: Path
) -> None:
    """Every subject's threshold is ``max(psi_floor, (1/N + 1/M) chi2(1 - a, df))`` with
    ``a = false_alarm_rate / (features + outputs)``, the rate read from the params file (not
    from the code's split), and a subject drifts exactly when its PSI is over it."""
    rows = tmp_path / "rows.csv"
    project.trained.test_raw.to_csv(rows, index=False)
    _, document, _ = project.run(rows)
    settings = yaml.safe_load(project.params.read_text())["monitor"]
    subjects = [*document["features"].values(), document["score"]]
    subjects += [document["predicted_class"]] if "predicted_class" in document else []
    a = settings["false_alarm_rate"] / len(subjects)
    for subject in subjects:
        df = max(sum(f > 0 for f in subject["reference"]) - 1, 1)
        spread = 1 / subject["rows"] + 1 / subject["reference_rows"]
        expected = max(settings["psi_floor"], spread * chi2_quantile(1 - a, df))
        assert subject["threshold"] == pytest.approx(expected, rel=1e-6)
        assert subject["drift"] == (subject["psi"] > subject["threshold"])


def test_too_few_rows_give_no_verdict(project: Project, tmp_path: Path) -> None:
    rows = tmp_path / "few.csv"
    project.trained.test_raw.head(project.monitor.min_rows - 1).to_csv(rows, index=False)

    code, document, markdown = project.run(rows)

    assert (code, document["exit_code"], document["verdict"]) == (2, 2, "no verdict")
    assert markdown.startswith("⚠️ **No verdict**")
    assert f"{project.monitor.min_rows}" in document["reason"]


def test_a_quiet_window_is_a_notice_and_a_green_decision_an_error_fails(
    project: Project, schema: Schema, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """monitor.yml's Decide step (`make retrain-decision`) on make monitor's own reports."""
    quiet = tmp_path / "quiet.csv"
    project.trained.test_raw.head(project.monitor.min_rows - 1).to_csv(quiet, index=False)
    broken = tmp_path / "broken.csv"
    name = list(schema.features)[-1]
    project.trained.test_raw.drop(columns=[name]).to_csv(broken, index=False)
    judged = tmp_path / "monitor.json"

    judged.write_text(json.dumps(project.run(quiet)[1]))
    capsys.readouterr()
    assert retrain.main([str(judged), "--params", str(project.params)]) == 0
    out, err = capsys.readouterr()
    outputs = dict(line.split("=", 1) for line in out.splitlines())  # GITHUB_OUTPUT lines only
    assert outputs["retrain"] == "false"
    assert "fewer than monitor.min_rows" in outputs["reason"]
    assert err.startswith("::notice::a quiet window, no verdict:")

    judged.write_text(json.dumps(project.run(broken)[1]))
    capsys.readouterr()
    assert retrain.main([str(judged), "--params", str(project.params)]) == 1
    assert "::error::make monitor gave no verdict" in capsys.readouterr().err


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


def served_fields(project: Project, schema: Schema) -> list[dict[str, Any]]:
    """Each test row's fields of the /predict response, as the service answers them."""
    output = project.output.astype(np.float64)
    if project.trained.task == "regression":
        width = project.half_width
        return [{"prediction": y, "interval": [y - width, y + width]} for y in output.tolist()]
    if project.trained.task == "multiclass":
        classes = [str(c) for c in schema.target.labels]
        return [
            {
                "label": classes[int(np.argmax(row))],
                "probabilities": dict(zip(classes, row, strict=True)),
            }
            for row in output.tolist()
        ]
    return [{"probability": p, "label": "ignored"} for p in output.tolist()]


def write_log(folder: Path, rows: pd.DataFrame, project: Project, schema: Schema) -> list[str]:
    """The rows as the service's request log, in two files; their ids."""
    folder.mkdir()
    records = json.loads(rows[list(schema.features)].to_json(orient="records"))
    ids = [f"req-{i // 2}/{i % 2}" for i in range(len(rows))]
    fields = served_fields(project, schema)
    lines = [
        json.dumps(
            {
                "id": ids[i],
                "time": "2025-01-01T00:00:00Z",
                "model_version": "test",
                "record": record,
                **fields[i],
            }
        )
        for i, record in enumerate(records)
    ]
    half = len(lines) // 2
    (folder / "a.jsonl").write_text("\n".join(lines[:half]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[half:]) + "\n")
    (folder / "notes.txt").write_text("not rows")
    return ids


def expected_metrics(
    project: Project, schema: Schema, target: np.ndarray, rows: np.ndarray
) -> dict[str, float]:
    """scikit-learn's metrics of the served outputs of ``rows`` against their raw ``target``."""
    output = project.output.astype(np.float64)[rows]
    task = project.trained.task
    if task == "regression":
        y = target.astype(np.float64)
        width = project.half_width
        return {
            "rmse": sk.root_mean_squared_error(y, output),
            "mae": sk.mean_absolute_error(y, output),
            "r2": sk.r2_score(y, output),
            "coverage": float(np.mean((output - width <= y) & (y <= output + width))),
        }
    if task == "multiclass":
        classes = [str(c) for c in schema.target.labels]
        y = np.array([classes.index(str(v)) for v in target])
        predicted = output.argmax(axis=1)
        everyone = list(range(len(classes)))
        recalls = sk.recall_score(y, predicted, labels=np.unique(y), average=None)
        with warnings.catch_warnings():  # float32 probabilities sum to 1 within 1e-7
            warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
            log_loss = sk.log_loss(y, output, labels=everyone)
        return {
            "log_loss": log_loss,
            "accuracy": sk.accuracy_score(y, predicted),
            "balanced_accuracy": sk.balanced_accuracy_score(y, predicted),
            "macro_f1": sk.f1_score(
                y, predicted, labels=everyone, average="macro", zero_division=0
            ),
            "min_class_recall": float(np.min(recalls)),
        }
    y = (target == schema.target.positive).astype(int)
    predicted = (output >= project.threshold).astype(int)
    return {
        "roc_auc": sk.roc_auc_score(y, output),
        "pr_auc": sk.average_precision_score(y, output),
        "log_loss": sk.log_loss(y, output, labels=[0, 1]),
        "brier": sk.brier_score_loss(y, output),
        "accuracy": sk.accuracy_score(y, predicted),
        "precision": sk.precision_score(y, predicted, zero_division=0),
        "recall": sk.recall_score(y, predicted, zero_division=0),
        "f1": sk.f1_score(y, predicted, zero_division=0),
        "threshold": project.threshold,
        "rows": len(y),
        "positive_rate": float(y.mean()),
    }


def test_a_request_log_folder_and_late_labels(
    project: Project, schema: Schema, tmp_path: Path
) -> None:
    rows = project.trained.test_raw
    ids = write_log(tmp_path / "log", rows, project, schema)
    known = np.arange(len(rows)) % 3 != 0  # a third of the rows has no label yet
    target = rows[schema.target.column].to_numpy()  # the data's own terms: a class, a number
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
    expected = expected_metrics(project, schema, target[known], np.flatnonzero(known))
    for name, value in expected.items():
        assert realised["metrics"][name] == pytest.approx(value, rel=1e-6), name
    assert "Realised, from late labels" in markdown


def test_an_unknown_label_is_refused(project: Project, schema: Schema, tmp_path: Path) -> None:
    rows = project.trained.test_raw
    ids = write_log(tmp_path / "log", rows, project, schema)
    good = rows[schema.target.column].iloc[0]  # a label the target can take, then one it cannot
    labels = pd.DataFrame({"id": ids[:3], "label": [good, "maybe", "maybe"]})
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
