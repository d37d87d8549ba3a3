"""``make monitor`` for a regression and a multiclass model, on real tables and real models.

The served rows are the model's test rows, written as the service's request log writes them
(the record and its ``/predict`` fields) or as the batch scorer's tables; the expected metrics
are computed here from the joined rows with scikit-learn and NumPy, never by the monitor's code.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from sklearn import metrics as sk

from pipelines.core.drift import chi2_quantile
from pipelines.core.model import load_model
from pipelines.monitoring import monitor as report
from pipelines.monitoring.retrain import reasons
from pipelines.params import GateParams, MonitorParams, load_section
from pipelines.serving import batch
from tests.support.tasks import Monitored


def run(
    m: Monitored, rows: Path, labels: Path | None = None, params: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    """The report's main on the rows: its exit code, JSON and markdown."""
    out = rows.parent / "out"
    argv = [str(rows), "--markdown", str(out / "m.md"), "--json", str(out / "m.json")]
    argv += m.arguments(params)
    if labels is not None:
        argv += ["--labels", str(labels)]
    code = report.main(argv)
    return code, json.loads((out / "m.json").read_text()), (out / "m.md").read_text()


def probabilities(m: Monitored) -> np.ndarray:
    """The multiclass model's test-row probabilities, classes in the schema's order."""
    columns = [f"probability_{c}" for c in m.schema.target.labels]
    return m.predictions[columns].to_numpy(dtype=np.float64)


def prediction_fields(m: Monitored, p: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Each test row's fields of the /predict response, as the service answers them.

    ``p``: a multiclass model's probabilities to serve instead of its own.
    """
    frame = m.predictions
    if m.task == "regression":
        return [
            {"prediction": float(y), "interval": [float(low), float(high)]}
            for y, low, high in zip(frame["prediction"], frame["low"], frame["high"], strict=True)
        ]
    classes = [str(c) for c in m.schema.target.labels]
    p = probabilities(m) if p is None else p
    return [
        {
            "label": classes[int(np.argmax(row))],
            "probabilities": dict(zip(classes, map(float, row), strict=True)),
        }
        for row in p
    ]


def write_log(
    m: Monitored, folder: Path, rows: pd.DataFrame | None = None, p: np.ndarray | None = None
) -> list[str]:
    """The test rows (or ``rows``, same order) as the service's request log; their ids."""
    rows = m.test if rows is None else rows
    folder.mkdir()
    records = json.loads(rows[list(m.schema.features)].to_json(orient="records"))
    ids = [f"req-{i}" for i in range(len(rows))]
    fields = prediction_fields(m, p)
    lines = [
        json.dumps(
            {
                "id": ids[i],
                "time": "2026-01-01T00:00:00Z",
                "model_version": "test",
                "record": record,
                **fields[i],
            },
            separators=(",", ":"),
        )
        for i, record in enumerate(records)
    ]
    (folder / "requests-2026010100-1.jsonl").write_text("\n".join(lines) + "\n")
    return ids


def write_labels(
    path: Path, ids: list[str], values: np.ndarray, known: np.ndarray, extra: bool = True
) -> None:
    """Late labels of the rows where ``known`` holds, plus one for an id never served."""
    frame = pd.DataFrame({"id": np.asarray(ids, dtype=object)[known], "label": values[known]})
    if extra:
        frame = pd.concat([frame, pd.DataFrame({"id": ["never-served"], "label": [values[0]]})])
    frame.to_csv(path, index=False)


def expected_regression(y: np.ndarray, p: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict:
    return {
        "rmse": float(np.sqrt(np.mean((y - p) ** 2))),
        "mae": float(np.mean(np.abs(y - p))),
        "r2": float(sk.r2_score(y, p)),
        "coverage": float(np.mean((low <= y) & (y <= high))),
    }


def expected_multiclass(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict:
    """scikit-learn's metrics of class names ``y`` and probabilities ``p`` (schema order)."""
    predicted = np.asarray(classes, dtype=object)[p.argmax(axis=1)]
    positions = np.array([classes.index(v) for v in y])
    with warnings.catch_warnings():  # served probabilities are rounded: they sum to 1 +- 1e-8
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
        log_loss = sk.log_loss(positions, p, labels=list(range(len(classes))))
    found = {
        "accuracy": sk.accuracy_score(y, predicted),
        "balanced_accuracy": sk.balanced_accuracy_score(y, predicted),
        "macro_f1": sk.f1_score(y, predicted, labels=classes, average="macro", zero_division=0),
        "log_loss": log_loss,
        "min_class_recall": min(sk.recall_score(y, predicted, labels=sorted(set(y)), average=None)),
    }
    return {name: float(value) for name, value in found.items()}


def halved(m: Monitored, rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows with the most varied numeric feature's distance from its minimum halved."""
    numeric = [n for n, f in m.schema.features.items() if f.type != "category"]
    name = max(numeric, key=lambda n: rows[n].nunique())
    feature = m.schema.features[name]
    low = feature.min if feature.min is not None else 0.0
    shifted = rows.copy()
    values = low + (rows[name] - low) / 2
    shifted[name] = np.floor(values) if feature.type == "integer" else values
    return shifted, name


def test_the_test_rows_show_no_drift(
    monitored: Monitored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = monitored
    rows = tmp_path / "rows.csv"
    m.test.to_csv(rows, index=False)  # no outputs: the monitor scores them with the model

    code, document, markdown = run(m, rows)

    assert (code, document["verdict"], document["task"]) == (0, "no drift", m.task)
    assert document["drifting"] == []
    assert document["rows"] == document["scored"] == len(m.test)
    # The model scored the rows as the evaluate stage did: the score's fractions are the reference's
    assert document["score"]["psi"] < 0.01
    if m.task == "multiclass":  # and so are the predicted classes' shares
        assert document["predicted_class"]["psi"] < 0.01
        assert not document["predicted_class_drift"]
        assert "| **predicted class** (model) | categorical |" in markdown
    else:
        assert "predicted_class" not in document
        assert "predicted class" not in markdown
    quality = document["quality"]
    if m.task == "regression":
        assert quality["estimated"] is None
        assert quality["realised"] is None
        (said,) = [line for line in capsys.readouterr().out.splitlines() if "needs labels" in line]
        assert "LABELS=" in said
        assert "A regression's quality needs labels" in markdown
    else:
        p = probabilities(m)
        estimated = quality["estimated"]
        assert estimated["accuracy"] == pytest.approx(p.max(axis=1).mean(), abs=1e-6)
        assert quality["test_estimated"]["accuracy"] == pytest.approx(p.max(axis=1).mean())
        entropy = scipy.stats.entropy(p, axis=1)  # the expected log loss of each row
        assert estimated["log_loss"] == pytest.approx(entropy.mean(), abs=1e-6)
        for k, c in enumerate(m.schema.target.labels):
            assert estimated[f"share_{c}"] == pytest.approx(p[:, k].mean(), abs=1e-6)
            predicted = np.mean(p.argmax(axis=1) == k)
            assert estimated[f"predicted_share_{c}"] == pytest.approx(predicted)
        assert "needs labels" not in markdown
        assert "| accuracy |" in markdown


def test_a_shifted_feature_drifts_and_is_named(monitored: Monitored, tmp_path: Path) -> None:
    m = monitored
    shifted, name = halved(m, m.test)
    ids = write_log(m, tmp_path / "log", shifted)

    code, document, markdown = run(m, tmp_path / "log")

    assert len(ids) == document["rows"]
    assert document["scored"] == 0  # the log carried the served outputs
    assert (code, document["verdict"]) == (1, "drift")
    assert document["drifting"] == [name]
    assert f'title "{name}: served' in markdown


@pytest.mark.parametrize("monitored", ["multiclass"], indirect=True)
def test_a_class_predicted_twice_as_often_drifts(monitored: Monitored, tmp_path: Path) -> None:
    """The test rows plus the rows the model predicts as its most frequent class once more:
    the class shares move, which the top probability alone need not show."""
    m = monitored
    predicted = m.predictions["predicted"].astype(str)
    common = predicted.value_counts().idxmax()
    again = (predicted == common).to_numpy()
    rows = pd.concat([m.test, m.test[again]], ignore_index=True)
    served = pd.concat([predicted, predicted[again]], ignore_index=True)
    rows.to_csv(tmp_path / "rows.csv", index=False)  # no outputs: the model scores them

    code, document, markdown = run(m, tmp_path / "rows.csv")

    assert code == 1
    assert document["predicted_class_drift"]
    found = document["predicted_class"]
    assert found["psi"] > found["threshold"]
    classes = [str(c) for c in m.schema.target.labels]
    assert found["bins"][: len(classes)] == classes
    shares = served.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    assert found["fractions"][: len(classes)] == pytest.approx(shares.to_list(), abs=1e-3)
    reference = predicted.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    assert found["reference"][: len(classes)] == pytest.approx(reference.to_list(), abs=1e-3)
    # its threshold takes the false-alarm rate split over the features, the score and the class
    monitor = load_section("monitor", MonitorParams, m.params)
    alpha = monitor.false_alarm_rate / (len(m.schema.features) + 2)
    df = sum(f > 0 for f in found["reference"]) - 1
    spread = 1 / len(rows) + 1 / found["reference_rows"]
    expected = spread * chi2_quantile(1 - alpha, df)  # the alerts' chi-square quantile
    assert expected > monitor.psi_floor  # the chi-square part decides, not the floor
    assert found["threshold"] == pytest.approx(expected, rel=1e-6)
    # Wilson and Hilferty, near the exact quantile (1.7% off at df = 3 in this tail)
    assert expected == pytest.approx(spread * scipy.stats.chi2.ppf(1 - alpha, df), rel=0.03)
    unsplit = spread * chi2_quantile(1 - alpha * (len(m.schema.features) + 2), df)
    assert found["threshold"] != pytest.approx(unsplit, rel=1e-3)
    row = next(line for line in markdown.splitlines() if "**predicted class** (model)" in line)
    assert row.endswith("🔴 drift |")
    assert 'title "predicted class: served' in markdown
    assert "the predicted class" in reasons(document, {})[0]


def test_late_labels_on_the_request_log_give_the_tasks_metrics(
    monitored: Monitored, tmp_path: Path
) -> None:
    m = monitored
    ids = write_log(m, tmp_path / "log", m.test)
    known = np.arange(len(m.test)) % 3 != 0  # a third of the rows has no label yet
    y = m.test[m.schema.target.column].to_numpy()
    write_labels(tmp_path / "labels.csv", ids, y, known)

    code, document, markdown = run(m, tmp_path / "log", tmp_path / "labels.csv")

    assert code == 0
    realised = document["quality"]["realised"]
    assert (realised["matched"], realised["unmatched"], realised["unused_labels"]) == (
        int(known.sum()),
        int((~known).sum()),
        1,
    )
    served = m.predictions[known]
    if m.task == "regression":
        expected = expected_regression(
            y[known].astype(float),
            served["prediction"].to_numpy(),
            served["low"].to_numpy(),
            served["high"].to_numpy(),
        )
        assert realised["filled_intervals"] == 0  # every interval came from the log
    else:
        classes = [str(c) for c in m.schema.target.labels]
        expected = expected_multiclass(y[known].astype(str), probabilities(m)[known], classes)
    for name, value in expected.items():
        assert realised["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    # The gate's bounds of the task's metrics, each with the realised value
    rules = load_section("gate", GateParams, m.params).metrics
    assert set(realised["bounds"]) == set(rules)
    for name, bound in realised["bounds"].items():
        assert bound["value"] == pytest.approx(realised["metrics"][name])
        assert not bound["broken"], name
    assert "Realised, from late labels" in markdown
    assert "needs labels" not in markdown


def test_a_batch_scored_table_with_labels(monitored: Monitored, tmp_path: Path) -> None:
    """The batch scorer's columns are the served outputs; a regression's missing interval is
    the prediction -/+ the model's half-width (meta.json), as the service serves it."""
    m = monitored
    model = load_model(m.made.path("model"))
    scored = batch.score(m.test, m.schema, model, threshold=0.5)
    table = pd.concat([m.test, scored.drop(columns=[m.schema.id])], axis=1)
    if m.task == "regression":
        table = table.drop(columns=["low", "high"])
    table.to_parquet(tmp_path / "scored.parquet")
    y = m.test[m.schema.target.column].to_numpy()
    ids = m.test[m.schema.id].astype(str).tolist()
    known = np.ones(len(ids), dtype=bool)
    write_labels(tmp_path / "labels.csv", ids, y, known, extra=False)

    code, document, _ = run(m, tmp_path / "scored.parquet", tmp_path / "labels.csv")

    assert (code, document["scored"]) == (0, 0)
    realised = document["quality"]["realised"]
    assert realised["matched"] == len(ids)
    if m.task == "regression":
        width = m.meta()["interval"]["half_width"]
        p = scored["prediction"].to_numpy()
        expected = expected_regression(y.astype(float), p, p - width, p + width)
        assert realised["filled_intervals"] == len(ids)
        assert realised["half_width"] == pytest.approx(width)
    else:
        classes = [str(c) for c in m.schema.target.labels]
        p = scored[[f"probability_{c}" for c in classes]].to_numpy(dtype=np.float64)
        expected = expected_multiclass(y.astype(str), p, classes)
    for name, value in expected.items():
        assert realised["metrics"][name] == pytest.approx(value, rel=1e-5), name


def test_a_label_the_target_cannot_take_is_named(monitored: Monitored, tmp_path: Path) -> None:
    m = monitored
    ids = write_log(m, tmp_path / "log", m.test)
    good = str(m.test[m.schema.target.column].iloc[0])
    bad = "not-a-class" if m.task == "multiclass" else "inf"
    pd.DataFrame({"id": ids[:3], "label": [good, bad, "twelve"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )

    code, document, markdown = run(m, tmp_path / "log", tmp_path / "labels.csv")

    assert (code, document["verdict"]) == (2, "error")
    assert f"label {bad!r} (id {ids[1]};" in document["reason"]
    assert "2 rows" in document["reason"]
    assert markdown.startswith("⚠️ **Could not compare**")


def test_two_labels_of_one_id_are_refused(monitored: Monitored, tmp_path: Path) -> None:
    m = monitored
    ids = write_log(m, tmp_path / "log", m.test)
    values = m.test[m.schema.target.column]
    first, other = values.iloc[0], next(v for v in values if str(v) != str(values.iloc[0]))
    pd.DataFrame({"id": [ids[0], ids[0]], "label": [first, other]}).to_csv(
        tmp_path / "labels.csv", index=False
    )

    code, document, _ = run(m, tmp_path / "log", tmp_path / "labels.csv")

    assert code == 2
    assert f"id {ids[0]!r} has two different labels" in document["reason"]


def test_a_realised_metric_past_its_bound_calls_for_retraining(
    monitored: Monitored, tmp_path: Path
) -> None:
    m = monitored
    ids = write_log(m, tmp_path / "log", m.test)
    y = m.test[m.schema.target.column].to_numpy()
    write_labels(tmp_path / "labels.csv", ids, y, np.ones(len(ids), dtype=bool), extra=False)
    document = yaml.safe_load(m.params.read_text())
    # A bound the model cannot meet: an error ceiling near zero, an accuracy floor near one
    name, rule = ("mae", {"ceiling": 0.001}) if m.task == "regression" else ("accuracy", {})
    rule = rule or {"floor": 0.999}
    document["gate"]["metrics"][name] = {**rule, "tolerance": 0.02}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))

    code, found, markdown = run(m, tmp_path / "log", tmp_path / "labels.csv", params)

    assert code == 0  # no drift: quality is the retraining decision's concern
    bound = found["quality"]["realised"]["bounds"][name]
    assert bound["broken"]
    assert f"| {name} |" in markdown
    assert "❌" in markdown
    rules = load_section("gate", GateParams, params).metrics
    (reason,) = reasons(found, rules)
    side = "above its ceiling" if m.task == "regression" else "below its floor"
    assert reason.startswith(f"realised {name} ")
    assert side in reason


@pytest.mark.parametrize("monitored", ["multiclass"], indirect=True)
def test_less_confident_served_probabilities_lower_the_estimate(
    monitored: Monitored, tmp_path: Path
) -> None:
    """Probabilities pulled halfway to uniform: the expected accuracy is their mean top
    probability, the expected log loss their mean entropy, and a gated estimate that moved the
    wrong way by more than its tolerance calls for retraining (a regression has none)."""
    m = monitored
    p = probabilities(m)
    softened = (p + 1 / p.shape[1]) / 2
    write_log(m, tmp_path / "log", m.test, softened)
    document = yaml.safe_load(m.params.read_text())
    document["gate"]["metrics"]["accuracy"] = {"floor": 0.0, "tolerance": 0.02}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))

    code, found, _ = run(m, tmp_path / "log", params=params)

    estimated = found["quality"]["estimated"]
    assert estimated["accuracy"] == pytest.approx(softened.max(axis=1).mean(), abs=1e-6)
    assert estimated["log_loss"] == pytest.approx(
        scipy.stats.entropy(softened, axis=1).mean(), abs=1e-6
    )
    assert code == 1
    assert found["score_drift"]  # the top probability is the monitored score
    rules = load_section("gate", GateParams, params).metrics
    found_reasons = reasons(found, rules)
    assert found_reasons[0] == "drift in the score"
    moved = {reason.split()[1]: reason for reason in found_reasons[1:]}
    assert set(moved) == {"accuracy", "log_loss"}  # the gated metrics the outputs estimate
    assert moved["accuracy"].startswith(
        f"estimated accuracy moved from {p.max(axis=1).mean():.4f} on the test rows to "
        f"{softened.max(axis=1).mean():.4f}"
    )


def test_served_outputs_no_model_gives_are_named(monitored: Monitored, tmp_path: Path) -> None:
    """A multiclass table missing a class's probability, a regression's prediction that is
    text, and a log's interval that is not a pair: no verdict, the column named."""
    m = monitored
    model = load_model(m.made.path("model"))
    scored = batch.score(m.test, m.schema, model, threshold=0.5)
    table = pd.concat([m.test, scored.drop(columns=[m.schema.id])], axis=1)
    if m.task == "multiclass":
        dropped = f"probability_{m.schema.target.labels[-1]}"
        table = table.drop(columns=[dropped])
        expected = f"the columns {dropped!r} are missing"
    else:
        table["prediction"] = table["prediction"].astype(object)
        table.loc[3, "prediction"] = "n/a"
        expected = "the 'prediction' column holds values that are not finite numbers"
    table.to_csv(tmp_path / "scored.csv", index=False)

    code, document, _ = run(m, tmp_path / "scored.csv")

    assert (code, document["verdict"]) == (2, "error")
    assert expected in document["reason"]
    if m.task == "regression":
        write_log(m, tmp_path / "log")
        log = tmp_path / "log" / "requests-2026010100-1.jsonl"
        lines = log.read_text().splitlines()
        line = json.loads(lines[1])
        line["interval"] = [line["interval"][0]]
        log.write_text("\n".join([lines[0], json.dumps(line), *lines[2:]]) + "\n")
        code, document, _ = run(m, tmp_path / "log")
        assert code == 2
        assert "an 'interval' that is not a pair [low, high]" in document["reason"]
