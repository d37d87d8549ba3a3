"""``make monitor`` with late labels: realised value against expected, realised rates by group.

A small model of the project's own table (any task) and the session's regression and multiclass
models (:mod:`tests.support.tasks`) serve their test rows; the labels are the rows' targets. The
value models and sensitive columns are stated here from the schema (an asymmetric gain per task,
an amount picked among the numeric features, the feature of fewest values as the group), so the
numbers mean something in every repository; the repository's own params are run as they are too.
Every expectation is computed here row by row (expected and realised value) or with a pandas
group-by (rates per group), never with the monitor's code.

Mutations tried, each caught by a test here:

- expected value from the wrong side (binary ``(1 - p)·G[1, d] + p·G[0, d]``):
  ``test_value_equals_a_row_by_row_computation`` (and the repository's own params' test);
- the multiclass decision by the top probability instead of the model's gain matrix:
  ``test_the_tasks_value_and_groups`` (the stated gain is not the identity);
- realised value at 0.5 instead of the model's threshold:
  ``test_value_equals_a_row_by_row_computation``;
- the realised interval from the expected gains: ``test_value_equals_a_row_by_row_computation``;
- the expected multiclass gain with the matrix's rows and columns swapped:
  ``test_the_tasks_value_and_groups``;
- a group's column read from the first rows instead of the labelled ones:
  ``test_rates_per_group_equal_a_group_by`` (a third of the rows has no label);
- a request log's integer group read as "1.0" (no normalisation): the group names then differ
  from the test rows' in ``test_rates_per_group_equal_a_group_by``;
- a gap wholly above its bound not flagged as a breach:
  ``test_a_gap_above_its_bound_is_a_breach_not_drift``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.drift import min_share
from pipelines.core.fairness import GAPS
from pipelines.core.features import feature_names
from pipelines.core.io import write_json
from pipelines.core.model import monitored_score, save_model
from pipelines.core.profile import build_profile
from pipelines.monitoring import monitor as report
from pipelines.monitoring import retrain
from pipelines.params import MonitorParams, load_paths, load_section
from pipelines.schema import Schema, dump_schema
from tests.support.columns import PARAMS, ROOT
from tests.support.tasks import Monitored
from tests.support.training import Trained, fit_on, small_train_params

THRESHOLD = 0.4  # the binary model's own: not 0.5
TEST_VALUE = 123.456  # the test rows' value_per_1000 in the fake metrics file


@dataclass(frozen=True)
class Served:
    """A model, its reference, and its test rows as served rows with late labels."""

    root: Path
    schema: Schema
    task: str
    output: np.ndarray  # per served row: probability, probabilities, or prediction
    rows: pd.DataFrame  # the served raw records, in served order
    labels: np.ndarray  # each row's label in the model's terms (0/1, class position, number)
    known: np.ndarray  # which rows have a late label
    arguments: list[str]  # the monitor's file arguments
    params: dict[str, Any]  # params.yaml to vary
    gain: np.ndarray | None = None  # a multiclass model's decision matrix (meta.json)
    threshold: float = THRESHOLD

    def run(self, params: dict[str, Any], name: str) -> tuple[int, dict[str, Any], str]:
        """The monitor on the served rows with ``params``: exit code, JSON, markdown."""
        folder = self.root / name
        folder.mkdir()
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        argv = [str(self.root / "rows"), "--labels", str(self.root / "labels.csv")]
        argv += ["--markdown", str(folder / "m.md"), "--json", str(folder / "m.json")]
        argv += ["--params", str(folder / "params.yaml"), *self.arguments]
        code = report.main(argv)
        return code, json.loads((folder / "m.json").read_text()), (folder / "m.md").read_text()

    def decided(self) -> np.ndarray:
        """The model's decision per row, row by row."""
        if self.task == "regression":
            return self.output.copy()
        if self.task == "binary":
            return np.array([1 if p >= self.threshold else 0 for p in self.output])
        gain = self.gain if self.gain is not None else np.eye(self.output.shape[1])
        return np.array(
            [
                max(range(len(p)), key=lambda d: sum(p[a] * gain[a][d] for a in range(len(p))))
                for p in self.output
            ]
        )


def fewest_values(schema: Schema, rows: pd.DataFrame) -> str:
    """The feature of fewest distinct served values (at least two): a group column."""
    counts = {n: rows[n].nunique() for n in schema.features if rows[n].nunique() >= 2}
    return min(counts, key=lambda n: (counts[n], n))


def amount_column(schema: Schema) -> str | None:
    """A numeric feature that is never missing and never negative: an amount."""
    for name, feature in schema.features.items():
        numeric = feature.type != "category" and not feature.nullable
        if numeric and feature.min is not None and feature.min >= 0:
            return name
    return None


def stated_value(task: str, classes: list[str], amount: str | None) -> dict[str, Any]:
    """An asymmetric value model for the task (amount: a column, or None)."""
    common: dict[str, Any] = {"currency": "EUR", "unit": "rows", "amount": amount}
    common |= {"resamples": 400, "seed": 0, "confidence": 0.95}
    if task == "regression":
        return common | {"cost": {"under": 2.0, "over": 0.5}}
    if task == "binary":
        return common | {"gain": {"tp": 3.0, "fp": -1.0, "fn": -0.5, "tn": 0.2}}
    return common | {
        "gain": {a: {d: float(asymmetric(classes, a, d)) for d in classes} for a in classes}
    }


def asymmetric(classes: list[str], actual: str, decided: str) -> float:
    """A multiclass gain that is not the identity: right pays its class's rank, wrong costs."""
    a, d = classes.index(actual), classes.index(decided)
    return float(a + 1) if a == d else -0.5 * (d + 1)


def independent_value(
    served: Served, value: dict[str, Any]
) -> tuple[float | None, float, np.ndarray]:
    """Expected and realised value per 1,000 labelled rows, and each row's realised gain."""
    classes = [str(c) for c in served.schema.target.labels]
    decided = served.decided()
    amount_name = value.get("amount")
    expected, realised = [], []
    for i in np.flatnonzero(served.known):
        amount = float(served.rows[amount_name].iloc[i]) if amount_name else 1.0
        y, d = served.labels[i], decided[i]
        if served.task == "regression":
            error = d - y
            cost = value["cost"]["over"] * max(error, 0) + value["cost"]["under"] * max(-error, 0)
            realised.append(-cost * amount)
            continue
        if served.task == "binary":
            cell = {(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}
            g = value["gain"]
            p = served.output[i]
            expected.append((p * g[cell[(1, d)]] + (1 - p) * g[cell[(0, d)]]) * amount)
            realised.append(g[cell[(int(y), int(d))]] * amount)
            continue
        g = value["gain"]
        p = served.output[i]
        expected.append(
            sum(p[a] * g[classes[a]].get(classes[d], 0.0) for a in range(len(classes))) * amount
        )
        realised.append(g[classes[int(y)]].get(classes[d], 0.0) * amount)
    mean_expected = None if not expected else float(np.mean(expected) * 1000)
    return mean_expected, float(np.mean(realised) * 1000), np.array(realised)


def group_rates(served: Served, column: str) -> pd.DataFrame:
    """The task's rates per group of the labelled rows, by a pandas group-by."""
    known = served.known
    frame = pd.DataFrame(
        {
            "group": served.rows[column].to_numpy()[known],
            "y": served.labels[known],
            "d": served.decided()[known],
        }
    )
    # a missing value is a group of its own, named as the fairness audit names it
    frame["group"] = ["<missing>" if pd.isna(g) else str(g) for g in frame["group"]]
    grouped = frame.groupby("group")
    if served.task == "binary":
        return pd.DataFrame(
            {
                "rows": grouped.size(),
                "selection_rate": grouped["d"].mean(),
                "tpr": frame[frame["y"] == 1].groupby("group")["d"].mean(),
                "fpr": frame[frame["y"] == 0].groupby("group")["d"].mean(),
            }
        )
    if served.task == "multiclass":
        frame["right"] = (frame["y"] == frame["d"]).astype(float)
        return pd.DataFrame(
            {"rows": grouped.size(), "accuracy": frame.groupby("group")["right"].mean()}
        )
    frame["error"] = (frame["y"] - frame["d"]).abs()
    return pd.DataFrame({"rows": grouped.size(), "mae": frame.groupby("group")["error"].mean()})


def labels_in_model_terms(schema: Schema, target: np.ndarray) -> np.ndarray:
    """The data's targets as the monitor reads labels: 0/1, class positions, numbers."""
    t = schema.target
    if t.task == "regression":
        return target.astype(np.float64)
    names = [str(c) for c in t.labels]
    if t.task == "binary":
        return np.array([1 if str(v) == str(t.positive) else 0 for v in target])
    return np.array([names.index(str(v)) for v in target])


def write_labels(root: Path, ids: list[str], target: np.ndarray, known: np.ndarray) -> None:
    frame = pd.DataFrame({"id": np.asarray(ids, dtype=object)[known], "label": target[known]})
    frame.to_csv(root / "labels.csv", index=False)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Served:
    """A small model of the project's own table, its test rows served as the request log."""
    root = tmp_path_factory.mktemp("outcomes")
    trained: Trained = fit_on(raw, schema, small_train_params("xgboost"))
    output = trained.predict(trained.test_raw, schema)
    meta: dict[str, Any] = {
        "features": feature_names(schema),
        "target": schema.target.model_dump(mode="json", exclude_defaults=True),
    }
    task = schema.target.task
    if task == "binary":
        meta["decision"] = {"threshold": THRESHOLD}
    if task == "regression":
        meta["interval"] = {"coverage": 0.9, "half_width": 1.0}
    save_model(trained.model, "xgboost", meta, root / "model")
    document = yaml.safe_load(PARAMS.read_text())
    rows = trained.test_raw.reset_index(drop=True)
    document["monitor"]["min_rows"] = min(document["monitor"]["min_rows"], len(rows))
    monitor = load_section("monitor", MonitorParams, PARAMS)
    profile = build_profile(
        trained.train_raw,
        monitored_score(output, task),
        schema,
        monitor.bins,
        monitor.score_bins,
        share=min_share(document["monitor"]["min_rows"]),
    )
    write_json(root / "reference", profile.to_json())
    write_json(root / "metrics", {"value_per_1000": TEST_VALUE})
    # the request log: integer features as JSON numbers, read back as floats; audit columns
    # too, as the service logs every field of its request model
    (root / "rows").mkdir()
    records = json.loads(rows[list(schema.checked)].to_json(orient="records"))
    ids = [f"req-{i}" for i in range(len(rows))]
    lines = []
    for i, record in enumerate(records):
        line: dict[str, Any] = {"id": ids[i], "record": record}
        if task == "binary":
            line["probability"] = float(output[i])
        elif task == "multiclass":
            names = [str(c) for c in schema.target.labels]
            line["probabilities"] = dict(zip(names, map(float, output[i]), strict=True))
        else:
            value = float(output[i])  # XGBoost's float32 is no JSON number
            line |= {"prediction": value, "interval": [value - 1, value + 1]}
        lines.append(json.dumps(line))
    (root / "rows" / "requests.jsonl").write_text("\n".join(lines) + "\n")
    target = rows[schema.target.column].to_numpy()
    known = np.arange(len(rows)) % 3 != 0  # a third of the rows has no label yet
    write_labels(root, ids, target, known)
    arguments = ["--schema", str(ROOT / load_paths(PARAMS).schema_)]
    for name in ("reference", "model", "metrics", "predictions", "fairness"):
        arguments += [f"--{name}", str(root / name)]
    return Served(
        root,
        schema,
        task,
        np.asarray(output, dtype=np.float64),
        rows,
        labels_in_model_terms(schema, target),
        known,
        arguments,
        document,
    )


def test_the_repositorys_own_params_report_what_they_name(own: Served) -> None:
    code, document, markdown = own.run(own.params, "own")

    assert code in (0, 1)
    value, fairness = own.params.get("value"), own.params.get("fairness")
    assert (document["value"] is None) == (value is None)
    assert (document["fairness"] is None) == (fairness is None)
    if value is not None:
        found = document["value"]
        if value.get("amount") and value["amount"] not in own.schema.features:
            assert "not one of the request's fields" in found["skipped"]
        else:
            expected, realised, _ = independent_value(own, value)
            assert found["realised_per_1000"] == pytest.approx(realised, rel=1e-6, abs=1e-6)
            if expected is not None:
                assert found["expected_per_1000"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
            assert found["test_per_1000"] == pytest.approx(TEST_VALUE)
        assert "#### Value per 1,000" in markdown
    if fairness is not None:
        assert set(document["fairness"]["realised"]) == set(fairness["sensitive"])
        assert "#### Fairness, from late labels" in markdown


def test_value_equals_a_row_by_row_computation(own: Served) -> None:
    amount = amount_column(own.schema)
    classes = [str(c) for c in own.schema.target.labels]
    value = stated_value(own.task, classes, amount)
    params = own.params | {"value": value, "fairness": None}

    code, document, markdown = own.run(params, "stated")

    expected, realised, gains = independent_value(own, value)
    found = document["value"]
    assert found["skipped"] is None
    assert found["rows"] == int(own.known.sum())
    assert found["realised_per_1000"] == pytest.approx(realised, rel=1e-6, abs=1e-6)
    if own.task == "regression":
        assert found["expected_per_1000"] is None
    else:
        assert found["expected_per_1000"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert found["difference_low"] < realised - expected < found["difference_high"]
    # the interval is the realised mean's: about 1.96 standard errors either side
    half = 1.96 * gains.std(ddof=1) / np.sqrt(len(gains)) * 1000
    assert found["realised_low"] < realised < found["realised_high"]
    assert found["realised_high"] - found["realised_low"] == pytest.approx(2 * half, rel=0.25)
    assert found["test_per_1000"] == pytest.approx(TEST_VALUE)
    assert document["fairness"] is None
    assert "#### Fairness" not in markdown
    assert f"{realised:,.2f}" in markdown
    assert code in (0, 1)


def test_an_amount_that_is_no_request_field_is_said_and_skipped(own: Served) -> None:
    value = stated_value(own.task, [str(c) for c in own.schema.target.labels], "no_such_field")
    code, document, markdown = own.run(own.params | {"value": value}, "no-amount")

    assert code in (0, 1)
    assert (
        "'no_such_field', which is not one of the request's fields" in document["value"]["skipped"]
    )
    assert document["value"]["realised_per_1000"] is None
    assert "not one of the request's fields" in markdown
    assert document["quality"]["realised"]["matched"] == int(own.known.sum())


def test_rates_per_group_equal_a_group_by(own: Served) -> None:
    column = fewest_values(own.schema, own.rows)
    section = {"sensitive": [column], "min_group_rows": 1, "resamples": 200}
    # the test rows' audit beside it: a file the evaluate stage would write
    test_audit = {column: {"groups": {"test-only group": {"rows": 7, "judged": False}}}}
    write_json(own.root / "fairness", test_audit)
    try:
        _, document, markdown = own.run(own.params | {"fairness": section}, "groups")
    finally:
        (own.root / "fairness").unlink()

    expected = group_rates(own, column)
    found = document["fairness"]["realised"][column]["groups"]
    # integer groups read back from the log's floats are named as the raw table names them
    assert set(found) == {str(g) for g in expected.index}
    for group, rates in expected.iterrows():
        for rate, value in rates.items():
            got = found[str(group)][rate]
            if pd.isna(value):
                assert got is None, (group, rate)
            else:
                assert got == pytest.approx(value, abs=1e-6), (group, rate)
    for gap, rates in GAPS[own.task].items():
        judged = expected[list(rates)]
        largest = max(judged[r].max() - judged[r].min() for r in rates)
        assert document["fairness"]["realised"][column][gap]["value"] == pytest.approx(
            largest, abs=1e-6
        )
    assert document["fairness"]["test"] == test_audit
    assert f"**{column}**" in markdown
    assert "| test-only group (none served) | 0 | 7 |" in markdown


def test_a_gap_above_its_bound_is_a_breach_not_drift(own: Served, tmp_path: Path) -> None:
    column = fewest_values(own.schema, own.rows)
    gap = next(iter(GAPS[own.task]))
    section = {"sensitive": [column], "min_group_rows": 1, "resamples": 200}
    _, before, _ = own.run(own.params | {"fairness": section}, "unbounded")
    found = before["fairness"]["realised"][column][gap]
    if found["low"] is None or found["low"] <= 0:
        pytest.skip(f"the served {gap} of {column} is not surely above 0 on these rows")
    bounded = section | {"max_gap": {gap: found["low"] / 2}}

    code, document, markdown = own.run(own.params | {"fairness": bounded}, "bounded")

    assert code == before["exit_code"]
    (breach,) = document["fairness"]["breaches"]
    assert f"realised {gap} of {column}" in breach
    assert document["fairness"]["bounds"][0]["breached"] is True
    assert markdown.splitlines()[2].startswith("❌ **Fairness**")
    report_file = tmp_path / "monitor.json"
    report_file.write_text(json.dumps(document))
    assert retrain.fairness_breaches(document) == [breach]
    assert retrain.reasons(document, {}) == retrain.reasons(before, {})


def test_an_audit_column_is_grouped_where_requests_send_it_and_said_where_none_do(
    own: Served, tmp_path: Path
) -> None:
    """A sensitive column under audit: (never a feature) is read from the records that carry it."""
    column = fewest_values(own.schema, own.rows)
    features = {n: f for n, f in own.schema.features.items() if n != column}
    audited = own.schema.model_copy(
        update={
            "features": features,
            "audit": own.schema.audit | {column: own.schema.checked[column]},
        }
    )
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(dump_schema(audited))
    section = {"sensitive": [column], "min_group_rows": 1, "resamples": 200}
    params = own.params | {"fairness": section}
    at = own.arguments.index("--schema") + 1
    sent = dataclasses.replace(
        own, arguments=[*own.arguments[:at], str(schema_file), *own.arguments[at + 1 :]]
    )

    _, document, _ = sent.run(params, "audit-sent")
    found = document["fairness"]["realised"][column]["groups"]
    expected = group_rates(own, column)
    assert set(found) == {str(g) for g in expected.index}
    assert [found[str(g)]["rows"] for g in expected.index] == expected["rows"].tolist()

    log = own.root / "rows" / "requests.jsonl"
    original = log.read_text()
    lines = [json.loads(line) for line in original.splitlines()]
    for line in lines:
        line["record"][column] = None  # what the service logs when a request leaves it out
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    try:
        _, document, _ = sent.run(params, "audit-not-sent")
    finally:
        log.write_text(original)
    assert column not in document["fairness"]["realised"]
    assert document["fairness"]["skipped"][column] == (
        "an audit column no request sent: its groups are unknown"
    )


def test_no_value_and_no_fairness_report_neither(own: Served) -> None:
    code, document, markdown = own.run(own.params | {"value": None, "fairness": None}, "none")

    assert code in (0, 1)
    assert document["value"] is None
    assert document["fairness"] is None
    assert document["quality"]["realised"]["matched"] == int(own.known.sum())
    assert "#### Value" not in markdown
    assert "#### Fairness" not in markdown


def test_the_tasks_value_and_groups(monitored: Monitored, tmp_path: Path) -> None:
    """The session's regression and multiclass models: a multiclass model decides by its own
    gain matrix (not the identity), a regression's value has no expected side."""
    m = monitored
    root = tmp_path / "project"
    shutil.copytree(m.made.path("model"), root / "model")
    classes = [str(c) for c in m.schema.target.labels]
    amount = amount_column(m.schema)
    value = stated_value(m.task, classes, amount)
    gain = None
    if m.task == "multiclass":
        gain = np.array([[asymmetric(classes, a, d) for d in classes] for a in classes])
        meta = json.loads((root / "model" / "meta.json").read_text())
        meta["decision"] = {"gain": gain.tolist()}
        (root / "model" / "meta.json").write_text(json.dumps(meta))
    # the served rows: a batch scorer's table of the test rows with the model's outputs
    frame = m.test.drop(columns=[m.schema.target.column])
    if m.task == "multiclass":
        output = m.predictions[[f"probability_{c}" for c in classes]].to_numpy(np.float64)
        for k, c in enumerate(classes):
            frame[f"probability_{c}"] = output[:, k]
    else:
        output = m.predictions["prediction"].to_numpy(np.float64)
        frame[["prediction", "low", "high"]] = m.predictions[["prediction", "low", "high"]]
    (root / "rows").mkdir()
    frame.to_csv(root / "rows" / "rows.csv", index=False)
    target = m.test[m.schema.target.column].to_numpy()
    known = np.arange(len(frame)) % 4 != 0
    ids = frame[m.schema.id].astype(str).tolist()
    write_labels(root, ids, target, known)
    arguments = m.arguments()[2:]  # all but --params
    arguments = [a if a != str(m.made.path("model")) else str(root / "model") for a in arguments]
    arguments += ["--fairness", str(m.made.path("fairness.json"))]
    params = yaml.safe_load(m.params.read_text())
    served = Served(
        root,
        m.schema,
        m.task,
        output,
        m.test,
        labels_in_model_terms(m.schema, target),
        known,
        arguments,
        params,
        gain,
    )
    column = params["fairness"]["sensitive"][0]

    code, document, _ = served.run(params | {"value": value}, "stated")

    assert code in (0, 1)
    expected, realised, _ = independent_value(served, value)
    assert document["value"]["realised_per_1000"] == pytest.approx(realised, rel=1e-6, abs=1e-6)
    if m.task == "regression":
        assert document["value"]["expected_per_1000"] is None
    else:
        assert document["value"]["expected_per_1000"] == pytest.approx(expected, rel=1e-6)
    found = document["fairness"]["realised"][column]["groups"]
    for group, rates in group_rates(served, column).iterrows():
        for rate, number in rates.items():
            assert found[str(group)][rate] == pytest.approx(number, abs=1e-6), (group, rate)
    assert document["fairness"]["test"] == m.made.json("fairness.json")
