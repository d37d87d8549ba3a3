"""The model card: intervals, segments, gaps, front matter, the PR section, and the real stage."""

from __future__ import annotations

import json
import math
import re
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from pipelines.core.metrics import METRICS, headline, label_of
from pipelines.core.metrics import BinaryPredictions as Predictions
from pipelines.params import CardParams, load_paths
from pipelines.review.card_changes import changes_section
from pipelines.schema import load_schema
from pipelines.stages import card
from tests.support.tasks import Project, pipeline
from tools.scratch import ScratchRepo

CARD = CardParams(
    min_segment_rows=20, resamples=300, seed=0, confidence=0.9, segment_metrics=("roc_auc", "f1")
)


def frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """Predictions that carry some signal, with ids 0..rows-1."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    probability = np.clip(0.3 * label + rng.uniform(0, 0.7, rows), 0, 1)
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "label": label,
            "probability": probability,
            "predicted": (probability >= 0.5).astype(int),
        }
    )


def test_intervals_hold_the_point_value_and_narrow_with_more_rows() -> None:
    small, large = frame(100), frame(2000)
    names = ["roc_auc", "brier"]
    a = card.metric_intervals(
        Predictions.from_frame(small), names, resamples=300, seed=0, confidence=0.9
    )
    b = card.metric_intervals(
        Predictions.from_frame(large), names, resamples=300, seed=0, confidence=0.9
    )
    assert a["roc_auc"]["value"] == pytest.approx(roc_auc_score(small.label, small.probability))
    for result in (a, b):
        for entry in result.values():
            assert entry["low"] <= entry["value"] <= entry["high"]
    width = {k: r["roc_auc"]["high"] - r["roc_auc"]["low"] for k, r in (("a", a), ("b", b))}
    assert width["b"] < width["a"] / 2


def test_an_undefined_metric_has_no_interval() -> None:
    one_class = frame(50).assign(label=1)
    result = card.metric_intervals(
        Predictions.from_frame(one_class), ["roc_auc", "f1"], resamples=200, seed=0, confidence=0.9
    )
    assert result["roc_auc"] == {"value": None, "low": None, "high": None}
    assert result["f1"]["value"] is not None


def test_segments_suppress_small_groups_and_name_missing_values() -> None:
    predictions = frame(200)
    groups = pd.DataFrame({"plan": ["a"] * 150 + ["b"] * 40 + [None] * 10}, index=predictions["id"])
    segments = card.segment_intervals(predictions, groups, ["roc_auc"], CARD)
    plan = segments["plan"]
    assert {g: e["rows"] for g, e in plan.items()} == {"a": 150, "b": 40, card.MISSING: 10}
    assert plan[card.MISSING]["suppressed"]
    assert plan[card.MISSING]["metrics"] == {}
    assert not plan["a"]["suppressed"]
    assert "roc_auc" in plan["a"]["metrics"]
    assert plan["b"]["positives"] == int(predictions["label"][150:190].sum())


def test_test_ids_missing_from_the_raw_table_are_an_error() -> None:
    predictions = frame(30)
    groups = pd.DataFrame({"plan": ["a"] * 29}, index=range(29))
    with pytest.raises(card.PipelineError, match="1 test ids"):
        card.segment_intervals(predictions, groups, ["roc_auc"], CARD)


def entry(value: float | None, rows: int = 100, suppressed: bool = False) -> dict:
    metrics = {} if suppressed else {m: {"value": value} for m in ("roc_auc", "brier")}
    return {"rows": rows, "positives": 10, "suppressed": suppressed, "metrics": metrics}


def test_the_largest_gap_skips_suppressed_groups_and_knows_lower_is_better() -> None:
    segments = {
        "plan": {"a": entry(0.9), "b": entry(0.7), "tiny": entry(None, 5, suppressed=True)},
        "region": {"x": entry(0.8), "y": entry(0.78)},
        "alone": {"only": entry(0.5), "small": entry(None, 3, suppressed=True)},
    }
    gaps = card.largest_gaps(segments, ["roc_auc", "brier"])
    assert gaps[0] == card.Gap("plan", "roc_auc", "a", "b", 0.2)
    brier = next(g for g in gaps if g.metric == "brier" and g.column == "plan")
    assert (brier.best, brier.worst) == ("b", "a")  # lower is better
    assert not [g for g in gaps if g.column == "alone"]


def test_class_balance_and_calibration_error() -> None:
    balance = card.class_balance(pd.Series(["y", "n", "n", "n"]), "y")
    assert balance == {"classes": {"n": 3, "y": 1}, "positive": "y", "positive_share": 0.25}
    points = [
        {"predicted": 0.1, "observed": 0.2, "rows": 30},
        {"predicted": 0.8, "observed": 0.8, "rows": 10},
    ]
    assert card.expected_calibration_error(points) == pytest.approx(0.075)
    assert card.expected_calibration_error([]) is None


def test_the_front_matter_carries_the_metrics_file_in_a_model_index() -> None:
    metrics = {"roc_auc": 0.81, "f1": 0.5, "rows": 100, "threshold": 0.5, "log_loss": None}
    metadata = card.card_metadata("m", metrics, "table", "abc.dir", "xgboost")
    (model,) = metadata["model-index"]
    (result,) = model["results"]
    assert model["name"] == "m"
    assert result["task"]["type"] == "tabular-classification"
    assert result["dataset"]["revision"] == "abc.dir"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"roc_auc": 0.81, "f1": 0.5}


def test_the_pr_section_shows_changed_metrics_and_gaps_or_says_unchanged() -> None:
    metrics = {"roc_auc": 0.8, "f1": 0.5}
    segments = {"plan": {"a": {"roc_auc": 0.9, "f1": 0.6}, "b": {"roc_auc": 0.7, "f1": 0.5}}}
    names = ("roc_auc", "f1")
    same = changes_section((metrics, segments), (metrics, segments), names)
    assert any(line.startswith("Unchanged") for line in same)
    moved = {"plan": {"a": {"roc_auc": 0.9, "f1": 0.6}, "b": {"roc_auc": 0.6, "f1": 0.5}}}
    changed = "\n".join(changes_section((metrics, segments), (metrics, moved), names))
    assert "| ROC AUC gap across plan | 0.2000 | 0.3000 | +0.1000 |" in changed
    assert "| ROC AUC |" not in changed  # unchanged rows are left out
    assert "BASE has no model" in "\n".join(changes_section(None, (metrics, segments), names))


def test_an_empty_human_text_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "text.md").write_text("  \n")
    with pytest.raises(card.PipelineError, match="is empty"):
        card.read_text(tmp_path / "text.md")
    with pytest.raises(card.PipelineError, match="does not exist"):
        card.read_text(tmp_path / "missing.md")


@pytest.mark.slow
def test_the_stage_writes_a_card_whose_model_index_is_the_metrics_file(
    trained_repo: ScratchRepo,
) -> None:
    """`dvc repro` ran the card stage: its front matter parses, with the test metrics."""
    root = trained_repo.path
    paths = load_paths(root / "params.yaml")
    text = (root / paths.card).read_text()
    _, front, body = text.split("---\n", 2)
    metadata = yaml.safe_load(front)
    metrics = json.loads((root / paths.metrics).read_text())
    (result,) = metadata["model-index"][0]["results"]
    shown = {m["type"]: m["value"] for m in result["metrics"]}
    schema = load_schema(root / paths.schema_)
    assert shown == {k: v for k, v in metrics.items() if k in METRICS[schema.target.task]}
    assert (root / paths.card_text).read_text().strip() in body
    assert schema.target.column  # the card names its balance in the target's classes
    registry = json.loads((root / paths.registry).read_text())
    assert registry["run_id"] in body
    for column in yaml.safe_load((root / "params.yaml").read_text())["evaluate"]["segments"]:
        assert f"### `{column}`" in body


def test_the_pr_comment_has_the_card_section(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.review.render import render
    from tests.review.test_report import make_report, outputs

    same = render(make_report(outputs(1.5, tmp_path), outputs(1.5, tmp_path)))
    assert "#### Model card\n\nUnchanged" in same
    worse = render(make_report(outputs(1.5, tmp_path), outputs(0.3, tmp_path)))
    assert "#### Model card\n\n| | base | PR | Δ |" in worse
    assert "| ROC AUC gap across Plan Type |" in worse
    first = render(make_report(None, outputs(1.5, tmp_path)))
    assert "New card: BASE has no model." in first


# --- each task, on a real table -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["regression", "multiclass"])
def task_card(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Project, str]:
    """The task's table through the stages, then the card stage itself; the project and card."""
    task = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = pipeline(tmp_path_factory.mktemp(f"card-{task}"), task, monkeypatch)
        # A binary model's segment metrics, whatever this repository's task: the card must say
        # they are not the task's and show the task's headline metrics instead
        document = yaml.safe_load(made.path("params.yaml").read_text())
        document["card"]["segment_metrics"] = list(CARD.segment_metrics)
        made.path("params.yaml").write_text(yaml.safe_dump(document))
        made.path("data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "abc.dir"}]}))
        made.path("registry.json").write_text(json.dumps({"run_id": "r", "model_uri": "m"}))
        made.path("text.md").write_text("## Intended use\n\nTests.\n")
        arguments = {
            "raw": "raw.csv",
            "schema": "schema.yaml",
            "data-dvc": "data.dvc",
            "predictions": "predictions.csv",
            "metrics": "metrics.json",
            "plots": "plots",
            "registry": "registry.json",
            "model": "model",
            "lock": "dvc.lock",
            "text": "text.md",
            "fairness": "fairness.json",
            "out": "card.md",
        }
        assert made.run(card, **arguments) == 0
    return made, made.path("card.md").read_text()


def card_section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_each_tasks_card_describes_its_target(task_card: tuple[Project, str]) -> None:
    made, text = task_card
    target = made.schema.target
    raw = pd.read_csv(made.path("raw.csv"))[target.column]
    data = card_section(text, "Training data")
    if target.task == "multiclass":
        counts = raw.astype(str).value_counts()
        for name in target.labels:
            assert f"`{name}` {counts[str(name)]:,} ({counts[str(name)] / len(raw):.1%})" in data
        assert "positive" not in data
    else:
        quantiles = np.quantile(raw, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
        shown = re.search(r"Target distribution: (.*)", data).group(1)  # type: ignore[union-attr]
        values = dict(item.rsplit(" ", 1) for item in shown.split(", "))
        assert list(values) == ["min", "10%", "25%", "median", "75%", "90%", "max", "mean"]
        for written, expected in zip(values.values(), [*quantiles, raw.mean()], strict=True):
            assert float(written) == pytest.approx(expected, rel=1e-3)


def test_each_tasks_card_has_its_metrics_and_its_calibration(
    task_card: tuple[Project, str],
) -> None:
    made, text = task_card
    task = made.schema.target.task
    metrics = made.json("metrics.json")
    front = yaml.safe_load(text.split("---")[1])
    (result,) = front["model-index"][0]["results"]
    assert result["task"] == card.TASKS[task]
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        k: v for k, v in metrics.items() if k in METRICS[task] and v is not None
    }
    assert "Expected calibration error" not in text  # binary only
    if task == "regression":
        section = card_section(text, "Prediction interval and calibration")
        coverage = re.search(r"Interval coverage on the test rows: ([0-9.]+)", section)
        assert float(coverage.group(1)) == pytest.approx(metrics["coverage"], abs=5e-5)  # type: ignore[union-attr]
        assert "built to cover 90%" in section
    else:
        section = card_section(text, "Calibration")
        assert "| mean top probability | accuracy | rows |" in section
    rows = [line for line in section.splitlines() if re.match(r"\| [0-9]", line)]
    assert sum(int(r.split("|")[3].strip().replace(",", "")) for r in rows) == metrics["rows"]


def test_each_tasks_segments_show_its_headline_metrics_and_say_why(
    task_card: tuple[Project, str],
) -> None:
    made, text = task_card
    task = made.schema.target.task
    section = card_section(text, "Metrics per segment")
    assert "card.segment_metrics names roc_auc, f1, not metrics of a" in section
    header = next(line for line in section.splitlines() if line.startswith("| group |"))
    assert header == "| group | rows | " + " | ".join(label_of(n) for n in headline(task)) + " |"
    assert "positives" not in section


def test_segment_metrics_of_the_task_are_kept_and_a_typo_fails() -> None:
    assert card.segment_metric_names("binary", ("roc_auc", "f1")) == (["roc_auc", "f1"], None)
    assert card.segment_metric_names("regression", ("mae",)) == (["mae"], None)
    names, note = card.segment_metric_names("multiclass", ("roc_auc", "macro_f1"))
    assert names == list(headline("multiclass"))
    assert note is not None
    assert "roc_auc, not metrics of a multiclass model" in note
    with pytest.raises(card.PipelineError, match="unknown metrics"):
        card.segment_metric_names("regression", ("rsme",))


def test_each_tasks_interval_has_the_width_of_its_confidence(
    task_card: tuple[Project, str],
) -> None:
    """A share's bootstrap interval (a multiclass model's accuracy, a regression's interval
    coverage) is about ``2 z sqrt(v (1 - v) / n)`` wide, z the normal quantile of
    ``card.confidence`` as params.yaml says it (half the confidence gives a third of it)."""
    made, text = task_card
    confidence = yaml.safe_load(made.path("params.yaml").read_text())["card"]["confidence"]
    section = card_section(text, "Test metrics")
    rows = int(re.search(r"resamples of the ([\d,]+) test rows", section)[1].replace(",", ""))
    found = re.search(
        r"\| (?:Accuracy|Interval coverage) \| ([\d.]+) \(([\d.]+) to ([\d.]+)\) \|", section
    )
    assert found, section
    value, low, high = (float(found[i]) for i in (1, 2, 3))
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    expected = 2 * z * math.sqrt(value * (1 - value) / rows)
    assert high - low == pytest.approx(expected, rel=0.2), (low, high, expected)


def test_the_card_states_the_decisions_value_and_its_rates_by_group() -> None:
    from pipelines.stages.card_markdown import decisions_lines

    audit = {
        "region": {
            "groups": {
                "north": {
                    "rows": 120,
                    "judged": True,
                    "selection_rate": 0.25,
                    "tpr": 0.5,
                    "fpr": 0.1,
                },
                "south": {
                    "rows": 7,
                    "judged": False,
                    "selection_rate": 0.0,
                    "tpr": None,
                    "fpr": 0.0,
                },
            },
            "demographic_parity_difference": None,
        }
    }
    metrics = {
        "value_per_1000": 1234.4,
        "value_trivial_per_1000": 100.0,
        "value_lift_low": 900.0,
        "value_lift_high": 1300.0,
    }
    facts = {
        "metrics": metrics,
        "currency": "EUR",
        "unit": "accounts",
        "threshold": 0.3,
        "fairness": audit,
    }
    text = "\n".join(decisions_lines(facts))
    assert "- Decision threshold: 0.3 (`train.threshold`)" in text
    assert "Value per 1,000 accounts: 1,234 EUR; the best policy without a model 100" in text
    assert "(lift interval 900 to 1,300)" in text
    assert "| north | 120 | 0.250 | 0.500 | 0.100 |" in text
    assert "| south (too few rows to judge) | 7 | 0.000 | n/a | 0.000 |" in text
    assert decisions_lines({"metrics": {"roc_auc": 0.8}, "fairness": {}}) == []
