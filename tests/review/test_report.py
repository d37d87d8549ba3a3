"""The pull-request comment and verdict file, rendered from constructed outputs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.metrics import BinaryPredictions as Predictions
from pipelines.core.metrics import classification_metrics
from pipelines.core.model import save_model
from pipelines.params import GateParams, RegisterParams, load_section
from pipelines.review import gate, report
from pipelines.review.charts import GRID, curve
from pipelines.review.outputs import (
    Base,
    CompareError,
    Outputs,
    Report,
    consistent,
    latency,
    model_bytes,
    stage_of,
)
from pipelines.review.render import MARKER, MAX_CHARS, fit, render
from pipelines.stages import train
from pipelines.stages.evaluate import segment_metrics
from tests.support.columns import PARAMS as PARAMS_FILE
from tests.support.training import small_train_params

ROWS = 600
PARAMS = GateParams.model_validate(
    {
        "resamples": 300,
        "seed": 0,
        "confidence": 0.95,
        "metrics": {
            "roc_auc": {"better": "higher", "floor": 0.6, "tolerance": 0.01},
            "log_loss": {"better": "lower", "ceiling": 0.8, "tolerance": 0.02},
            "f1": {"better": "higher", "floor": 0.1, "tolerance": 0.03},
        },
    }
)
MODEL_NAME = load_section("register", RegisterParams, PARAMS_FILE).model_name
STATS = {
    side: {"bytes": 1000, "rows": ROWS, "single": 0.0012, "batch": 0.004} for side in ("base", "pr")
}


def outputs(signal: float, path: Path, ids_from: int = 0) -> Outputs:
    """What the evaluate and register stages write, for scores of a given quality."""
    rng = np.random.default_rng(0)
    labels = (rng.random(ROWS) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(signal * (labels - 0.3) * 2 + rng.normal(size=ROWS) - 1)))
    written = classification_metrics(labels, p, 0.5)
    groups = pd.DataFrame({"Plan Type": np.where(np.arange(ROWS) % 3 == 0, "Yearly", "Monthly")})
    return Outputs(
        predictions=pd.DataFrame(
            {
                "id": np.arange(ROWS) + ids_from,
                "label": labels,
                "probability": p,
                "predicted": (p >= 0.5).astype(int),
            }
        ),
        metrics={k: round(v, 6) if isinstance(v, float) else v for k, v in written.items()},
        segments=segment_metrics(Predictions.at_threshold(labels, labels, p, 0.5), groups, 0.5),
        model=path,
        registry={"run_id": f"run{signal}", "model_uri": f"models:/{MODEL_NAME}/3"},
    )


def make_report(base: Outputs | None, pr: Outputs, **extra: object) -> Report:
    result = gate.compare(None if base is None else base.side(), pr.side(), PARAMS)
    fields: dict = {
        "params_diff": {"params.yaml": {"train.seed": {"old": 42, "new": 7}}},
        "data_md5": ("abc.dir", "abc.dir"),
        "validation": {
            "success": True,
            "result": {"statistics": {"evaluated_expectations": 9, "successful_expectations": 9}},
        },
        "model_stats": STATS if base is not None else {"pr": STATS["pr"]},
    } | extra
    source = "none" if base is None else "DVC"
    return Report(Base("main", "0123456789ab" * 3, source, base), result, PARAMS, pr, **fields)


@pytest.fixture
def same(tmp_path: Path) -> Report:
    return make_report(outputs(1.5, tmp_path), outputs(1.5, tmp_path))


@pytest.fixture
def worse(tmp_path: Path) -> Report:
    return make_report(outputs(1.5, tmp_path), outputs(0.3, tmp_path))


def table_row(comment: str, name: str) -> list[str]:
    row = next(line for line in comment.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_the_comment_opens_with_the_verdict_and_ends_with_the_marker(same: Report) -> None:
    comment = render(same)
    first = comment.splitlines()[0]
    assert first.startswith("✅ **Gate passed** against `main` (0123456)")
    assert "3 unchanged; none regressed (paired bootstrap over 600 test rows)" in first
    assert comment.rstrip().endswith(MARKER)
    assert comment.count(MARKER) == 1


def test_a_failed_gate_names_each_regressed_metric_first(worse: Report) -> None:
    comment = render(worse)
    first = comment.splitlines()[0]
    assert first.startswith("❌ **Gate failed**")
    assert "regressed beyond tolerance: roc_auc" in first
    assert any(line.startswith("- roc_auc regressed by -") for line in comment.splitlines())
    assert table_row(comment, "roc_auc")[-1] == "🔴 regressed"


def test_the_metrics_table_shows_the_metrics_files_numbers(worse: Report) -> None:
    comment = render(worse)
    assert worse.base.outputs is not None
    for result in worse.gate.metrics:
        cells = table_row(comment, result.name)
        assert float(cells[2]) == worse.base.outputs.metrics[result.name]
        assert float(cells[3]) == worse.pr.metrics[result.name]
        assert float(cells[4]) == pytest.approx(cells_delta := float(cells[3]) - float(cells[2]))
        low, high = (float(x) for x in cells[5].split(" to "))
        assert low == round(result.low, 4)  # type: ignore[arg-type]
        assert high == round(result.high, 4)  # type: ignore[arg-type]
        assert low <= cells_delta <= high or result.verdict == "invalid"


def test_params_segments_data_and_model_sections(worse: Report) -> None:
    comment = render(worse)
    assert "| train.seed | 42 | 7 |" in comment
    assert "Raw data: unchanged (md5 `abc.dir`)" in comment
    assert "Validation: ✅ passed (9 of 9 expectations)" in comment
    assert "| size of the model files | 1,000 bytes | 1,000 bytes |" in comment
    assert "| latency, 1 row (median of 25) | 1.20 ms | 1.20 ms |" in comment
    assert "`run0.3`" in comment
    assert f"`models:/{MODEL_NAME}/3`" in comment
    segments = [line for line in comment.splitlines() if line.startswith("| Plan Type = ")]
    assert len(segments) == 2
    changes = [max(abs(float(c)) for c in line.split("|")[5:9:3]) for line in segments]
    assert changes == sorted(changes, reverse=True)


def test_changed_data_failed_validation_and_changed_gate_rules_are_shown(same: Report) -> None:
    validation = {
        "success": False,
        "result": {"statistics": {"evaluated_expectations": 9, "successful_expectations": 8}},
        "failures": [{"column": "Plan Type", "rule": "allowed values"}],
    }
    changed = make_report(
        same.base.outputs,
        same.pr,
        data_md5=("old.dir", "new.dir"),
        validation=validation,
        gate_rules_changed=True,
    )
    comment = render(changed)
    assert "**changed**: md5 `old.dir` → `new.dir`" in comment
    assert "❌ **failed** (8 of 9 expectations passed)" in comment
    assert "  - Plan Type: allowed values" in comment
    assert "This PR changes the gate's own rules" in comment


def test_a_likely_leak_found_by_validation_is_shown(same: Report) -> None:
    validation = {
        "success": True,
        "result": {"statistics": {"evaluated_expectations": 9, "successful_expectations": 9}},
        "failures": [],
        "leaks": [{"feature": "refund amount", "metric": "ROC AUC", "score": 0.9951}],
    }
    comment = render(make_report(same.base.outputs, same.pr, validation=validation))
    assert (
        "⚠️ **Likely leak:** `refund amount` alone predicts the target with ROC AUC 0.995" in comment
    )
    assert "Likely leak" not in render(same)


def test_curves_are_inline_mermaid_charts_of_base_and_pr(worse: Report) -> None:
    comment = render(worse)
    charts = re.findall(r"```mermaid\n(.*?)```", comment, flags=re.DOTALL)
    assert len(charts) == 2
    for chart in charts:
        assert "xychart-beta" in chart
        lines = re.findall(r"line \[(.*)\]", chart)
        assert len(lines) == 2
        assert all(len(line.split(", ")) == len(GRID) for line in lines)
    roc = curve(worse.pr.predictions, "roc")
    assert roc == sorted(roc)
    assert roc[-1] == 1.0
    precision = curve(worse.pr.predictions, "pr")
    assert all(0 <= v <= 1 for v in precision)
    assert precision[0] == 1.0  # at recall 0, as scikit-learn's curve ends


def test_untrusted_param_values_cannot_break_the_markup(same: Report) -> None:
    sneaky = {"params.yaml": {"train.x": {"old": "a|b", "new": "<img src=x> `code` " + MARKER}}}
    comment = render(make_report(same.base.outputs, same.pr, params_diff=sneaky))
    escaped = MARKER.replace("<", "&lt;").replace(">", "&gt;")
    assert f"| train.x | a\\|b | &lt;img src=x&gt; 'code' {escaped} |" in comment
    assert comment.count(MARKER) == 1


def test_a_huge_report_is_cut_to_fit_one_github_comment(same: Report) -> None:
    many = {"params.yaml": {f"p{i}": {"old": "x" * 70, "new": "y" * 70} for i in range(5000)}}
    comment = render(make_report(same.base.outputs, same.pr, params_diff=many))
    assert len(comment) <= MAX_CHARS < 65_536
    assert "… and 4975 more" in comment
    cut = fit("z" * 100_000)
    assert len(cut) <= MAX_CHARS
    assert cut.rstrip().endswith(MARKER)
    assert "cut to fit" in cut


def test_the_first_model_comment_says_only_floors_apply(tmp_path: Path) -> None:
    first = make_report(None, outputs(1.5, tmp_path))
    comment = render(first)
    assert comment.startswith("✅ **Gate passed (first model)**: `main` (0123456) has no model")
    assert "only the floors and ceilings apply" in comment
    assert table_row(comment, "roc_auc")[2] == "n/a"
    assert table_row(comment, "roc_auc")[-1] == "🆕 new"
    assert "| | PR |" in comment
    assert "(grey: base" not in comment
    assert report.gate_document(first)["mode"] == "first model"


def test_other_test_rows_are_noted(tmp_path: Path) -> None:
    moved = make_report(outputs(1.5, tmp_path), outputs(1.5, tmp_path, ids_from=50))
    comment = render(moved)
    assert "> **Note:** The test rows differ (50 test ids only in BASE and 50 only in the PR)" in (
        comment
    )
    assert "Bootstrap (unpaired)" in comment


def test_the_verdict_file_is_strict_json(worse: Report) -> None:
    nan = dataclasses.replace(worse.pr, metrics={**worse.pr.metrics, "f1": float("nan")})
    document = report.gate_document(make_report(worse.base.outputs, nan))
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text)["verdict"] == "fail"
    assert document["exit_code"] == 1
    assert document["metrics"]["f1"]["verdict"] == "invalid"
    assert document["metrics"]["f1"]["pr"] is None
    assert document["metrics"]["roc_auc"]["verdict"] == "regressed"
    assert "roc_auc regressed" in document["reason"]
    assert document["base"] == {"ref": "main", "commit": "0123456789ab" * 3, "source": "DVC"}


def test_could_not_compare_writes_the_reason_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml, no git repository
    code = report.main(["--base", "main", "--comment", "c.md", "--json", "g.json"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not compare with main: ")
    assert "params.yaml" in err
    assert len(err.splitlines()) == 1
    document = json.loads((tmp_path / "g.json").read_text())
    assert document["verdict"] == "error"
    assert document["exit_code"] == 2
    assert "params.yaml" in document["reason"]
    comment = (tmp_path / "c.md").read_text()
    assert comment.startswith("⚠️ **Could not compare** with `main`")
    assert comment.rstrip().endswith(MARKER)


def test_stage_of_finds_the_stage_that_writes_an_output() -> None:
    lock = {"stages": {"train": {"outs": [{"path": "models/model"}]}, "evaluate": {"outs": []}}}
    assert stage_of(lock, Path("models/model")) == "train"
    assert stage_of(lock, Path("eval/predictions.csv")) is None
    assert stage_of({}, Path("models/model")) is None


def test_size_and_latency_of_a_saved_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"]).astype("float32")
    y = (x["a"] + rng.normal(size=300) > 0).to_numpy(dtype=int)
    model = train.fit(x, y, small_train_params("xgboost"))
    save_model(model, "xgboost", {"features": ["a", "b", "c"]}, tmp_path / "model")
    files = list((tmp_path / "model").iterdir())
    assert model_bytes(tmp_path / "model") == sum(f.stat().st_size for f in files)
    timed = latency({"pr": tmp_path / "model"}, x)["pr"]
    assert timed["single"] is not None
    assert timed["single"] > 0
    assert timed["batch"] is not None
    assert timed["batch"] > 0
    # A model that takes features the test set no longer has is not timed, not crashed
    fewer = latency({"base": tmp_path / "model"}, x.drop(columns="c"))
    assert fewer == {"base": {"single": None, "batch": None}}


def test_point_estimates_disagreeing_with_the_predictions_cannot_be_compared(
    tmp_path: Path,
) -> None:
    stale = outputs(1.5, tmp_path)
    stale.metrics["roc_auc"] = round(stale.metrics["roc_auc"] - 0.01, 6)
    with pytest.raises(CompareError, match="metrics file says roc_auc"):
        consistent(stale, ["roc_auc", "f1"], "the PR")
    consistent(outputs(1.5, tmp_path), ["roc_auc", "f1"], "the PR")


def test_predictions_read_back_from_csv_give_the_same_gate(tmp_path: Path) -> None:
    """The bootstrap reads eval/predictions.csv as the evaluate stage writes it."""
    written = outputs(1.5, tmp_path)
    written.predictions.to_csv(tmp_path / "p.csv", index=False)
    read = Predictions.from_frame(pd.read_csv(tmp_path / "p.csv"))
    np.testing.assert_array_equal(read.ids, written.predictions["id"])
    np.testing.assert_allclose(read.probability, written.predictions["probability"])


def test_the_mlflow_run_links_to_its_page_on_the_teams_server(worse: Report) -> None:
    run = "0123456789abcdef0123456789abcdef"
    url = f"https://mlflow.example.com/#/experiments/4/runs/{run}"
    linked = dataclasses.replace(
        worse, pr=dataclasses.replace(worse.pr, registry={"run_id": run, "run_url": url})
    )
    assert f"[`{run}`]({url})" in render(linked)
    # The PR's registry.json is untrusted: anything but a run page stays plain text
    for bad in (
        "javascript:alert(1)",
        f"https://x.example/#/experiments/4/runs/{run})](https://evil.example",
        f"ftp://mlflow.example.com/#/experiments/4/runs/{run}",
    ):
        plain = dataclasses.replace(
            worse, pr=dataclasses.replace(worse.pr, registry={"run_id": run, "run_url": bad})
        )
        comment = render(plain)
        assert f"`{run}`" in comment
        assert "](" not in comment.split("| MLflow run |")[1].splitlines()[0]


@pytest.mark.parametrize(
    ("tracking", "url"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/experiments/3/runs/r"),
        (
            "https://u:secret@mlflow.example.com/ml/",
            "https://mlflow.example.com/ml/#/experiments/3/runs/r",
        ),
        ("sqlite:///mlruns/mlflow.db", None),
        ("databricks", None),
    ],
)
def test_the_run_url_is_a_servers_page_without_credentials(tracking: str, url: str | None) -> None:
    from pipelines.core.lineage import run_url

    assert run_url(tracking, "3", "r") == url


def test_outputs_keep_their_models_task_after_its_folder_is_gone(tmp_path: Path) -> None:
    """BASE's files are fetched into a temporary folder that the comment outlives."""
    import shutil

    from pipelines.core.io import write_json

    folder = tmp_path / "model"
    folder.mkdir()
    write_json(folder / "meta.json", {"target": {"column": "y", "task": "regression"}})
    frame = pd.DataFrame(
        {"id": [1, 2], "label": [1.0, 2.0], "prediction": [1.5, 2.5], "low": [0, 1], "high": [2, 3]}
    )
    outputs = Outputs(predictions=frame, metrics={}, segments={}, model=folder, registry=None)
    shutil.rmtree(folder)
    assert outputs.task == "regression"
    assert outputs.read().predicted.tolist() == [1.5, 2.5]


def test_the_comment_puts_value_first_with_its_interval_and_curve(tmp_path: Path) -> None:
    from pipelines.core.value import value_model
    from pipelines.params import ValueParams

    gain = {"tp": 5.0, "fp": -1.0, "fn": 0.0, "tn": 0.0}
    section = ValueParams(currency="EUR", unit="accounts", gain=gain)
    valuer = report.Valuer(value_model(section, "binary"), None)
    base, pr = outputs(1.5, tmp_path), outputs(2.5, tmp_path)
    rules = GateParams.model_validate(
        PARAMS.model_dump() | {"metrics": {"value_per_1000": {"tolerance": 10.0}, **PARAMS.metrics}}
    )
    result = gate.compare(base.side(), pr.side(), rules, gains_of=valuer.gains)
    view = valuer.view((base.side(), pr.side()), pr)
    made = make_report(base, pr)
    text = render(dataclasses.replace(made, gate=result, params=rules, value=view))

    def worth(frame: pd.DataFrame) -> float:  # cell by cell, here
        cells = {(1, 1): 5.0, (0, 1): -1.0, (1, 0): 0.0, (0, 0): 0.0}
        pairs = zip(frame["label"], frame["predicted"], strict=True)
        return float(np.mean([cells[(int(a), int(d))] for a, d in pairs]) * 1000)

    assert text.index("#### Value per 1,000 accounts (EUR)") < text.index("| metric |")
    assert f"base **{worth(base.predictions):,.0f}**, PR **{worth(pr.predictions):,.0f}**" in text
    assert "95% interval" in text.split("| metric |")[0]
    assert 'title "Value per 1,000 accounts by threshold (base at 0.5, PR at 0.5)"' in text
    everybody = float(np.mean(np.where(pr.predictions["label"] == 1, 5.0, -1.0)) * 1000)
    assert f"earns {max(everybody, 0.0):,.0f}" in text
