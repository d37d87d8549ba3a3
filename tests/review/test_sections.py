"""The pull-request comment and verdict of a multiclass and a regression model, on real tables.

Each task's table runs through the stages three times (tests/support/tasks.py): BASE's model,
a PR's model with other XGBoost settings, and a clearly worse PR (the dummy). The comment's
numbers are checked against an independent computation on the rows of ``predictions.csv``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import precision_score, recall_score

from pipelines.core.metrics import METRICS, MulticlassPredictions, headline, label_of
from pipelines.params import CardParams, GateParams, load_section
from pipelines.review import gate, report
from pipelines.review.outputs import Base, Outputs, Report, model_stats
from pipelines.review.render import MARKER, MAX_CHARS, SEGMENT_METRICS, render
from pipelines.review.sections import (
    MATRIX_CLASSES,
    OTHER,
    RESIDUAL_BINS,
    RESIDUAL_RANGE,
    confusion_section,
)
from tests.support.columns import PARAMS
from tests.support.tasks import Project, pipeline

RULES = {
    "regression": {
        "rmse": {"tolerance": 0.05},
        "mae": {"tolerance": 0.05},
        "r2": {"tolerance": 0.02},
    },
    "multiclass": {
        "log_loss": {"tolerance": 0.02},
        "macro_f1": {"tolerance": 0.02},
        "accuracy": {"tolerance": 0.02},
    },
}
# another, weaker XGBoost (the train section takes the whole xgboost block)
WEAKER = yaml.safe_load(PARAMS.read_text())["train"]["xgboost"] | {
    "n_estimators": 15,
    "max_depth": 2,
    "learning_rate": 0.3,
}


@dataclass(frozen=True)
class Sides:
    """BASE's model and two PRs' of one task's table."""

    task: str
    base: Project
    other: Project
    dummy: Project

    def params(self) -> GateParams:
        return GateParams.model_validate(
            {"resamples": 300, "seed": 0, "confidence": 0.95, "metrics": RULES[self.task]}
        )

    def report(self, pr: Project, base: Project | None = None) -> Report:
        """The report of ``pr`` against ``base`` (BASE's model unless given)."""
        before = outputs(base or self.base)
        after = outputs(pr)
        result = gate.compare(before.side(), after.side(), self.params())
        stats = model_stats(before, after, pr.path("test.parquet"))
        return Report(
            Base("main", "0123456789ab" * 3, "DVC", before),
            result,
            self.params(),
            after,
            model_stats=stats,
            card_metrics=load_section("card", CardParams, PARAMS).segment_metrics,
        )


def outputs(made: Project) -> Outputs:
    """What the evaluate stage wrote in the project, as the report reads it."""
    return Outputs(
        predictions=pd.read_csv(made.path("predictions.csv")),
        metrics=made.json("metrics.json"),
        segments=made.json("segments.json"),
        model=made.path("model"),
        registry=None,
    )


@pytest.fixture(scope="module")
def sides(task_model: Project, tmp_path_factory: pytest.TempPathFactory) -> Sides:
    task = task_model.schema.target.task
    with pytest.MonkeyPatch.context() as monkeypatch:

        def run(name: str, **train: object) -> Project:
            return pipeline(tmp_path_factory.mktemp(f"{task}-{name}"), task, monkeypatch, **train)

        return Sides(task, task_model, run("other", xgboost=WEAKER), run("dummy", model="dummy"))


@pytest.fixture(scope="module")
def comment(sides: Sides) -> str:
    """The comment of the PR with other XGBoost settings against BASE's."""
    return render(sides.report(sides.other))


def predictions(made: Project) -> pd.DataFrame:
    return pd.read_csv(made.path("predictions.csv"))


def section(comment: str, title: str) -> str:
    """The text of the comment's section whose heading starts with ``title``."""
    start = comment.index(f"#### {title}")
    end = comment.find("\n#### ", start + 1)
    return comment[start : end if end > 0 else len(comment)]


def rows_of(text: str) -> list[list[str]]:
    """The cells of each body row of the markdown tables in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def charts(text: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", text, flags=re.DOTALL)


def lines_of(chart: str) -> list[list[float]]:
    return [[float(v) for v in line.split(", ")] for line in re.findall(r"line \[(.*)\]", chart)]


def of_another_task(sides: Sides, task: str, comment: str, title: str) -> bool:
    """Whether the comment is of another task's model; if so, it must not have the section."""
    if sides.task == task:
        return False
    assert f"#### {title}" not in comment
    return True


def test_the_comment_has_the_tasks_sections_and_fits(sides: Sides, comment: str) -> None:
    assert comment.startswith(("✅ **Gate", "❌ **Gate"))
    assert comment.rstrip().endswith(MARKER)
    assert len(comment) <= MAX_CHARS
    assert "#### Curves" not in comment
    assert "ROC AUC base" not in comment
    if sides.task == "regression":
        assert len(charts(comment)) == 2
        assert "#### Predictions against actual values" in comment
        assert "#### Error by segment (largest changes first)" in comment
        assert "#### Confusion matrix" not in comment
    else:
        assert not charts(comment)
        assert "#### Confusion matrix" in comment
        assert "#### Precision and recall per class" in comment
        assert "#### Segments (largest changes first)" in comment


def test_the_confusion_matrix_counts_the_rows_and_their_change(sides: Sides, comment: str) -> None:
    if of_another_task(sides, "multiclass", comment, "Confusion matrix"):
        return
    classes = [str(c) for c in sides.base.schema.target.labels]

    def crosstab(made: Project) -> pd.DataFrame:
        frame = predictions(made).astype({"label": str, "predicted": str})
        table = pd.crosstab(frame["label"], frame["predicted"])
        return table.reindex(index=classes, columns=classes, fill_value=0)

    pr, base = crosstab(sides.other), crosstab(sides.base)
    table = rows_of(section(comment, "Confusion matrix"))
    assert [row[0] for row in table] == [f"**{c}**" for c in classes]
    for row, actual in zip(table, classes, strict=True):
        for text, predicted in zip(row[1:], classes, strict=True):
            count, change = re.fullmatch(r"([\d,]+) \(([+\-±][\d,]+)\)", text).groups()  # type: ignore[union-attr]
            assert int(count.replace(",", "")) == pr.loc[actual, predicted]
            expected = pr.loc[actual, predicted] - base.loc[actual, predicted]
            assert int(change.replace(",", "").replace("±", "")) == expected


def test_per_class_precision_and_recall_are_scikit_learns(sides: Sides, comment: str) -> None:
    if of_another_task(sides, "multiclass", comment, "Precision and recall per class"):
        return
    classes = [str(c) for c in sides.base.schema.target.labels]

    def scores(made: Project) -> dict[str, np.ndarray]:
        frame = predictions(made).astype({"label": str, "predicted": str})
        args = (frame["label"], frame["predicted"])
        return {
            "precision": precision_score(*args, labels=classes, average=None, zero_division=0),
            "recall": recall_score(*args, labels=classes, average=None, zero_division=0),
        }

    pr, base = scores(sides.other), scores(sides.base)
    table = rows_of(section(comment, "Precision and recall per class"))
    frame = predictions(sides.other).astype({"label": str})
    for i, (row, name) in enumerate(zip(table, classes, strict=True)):
        assert row[0] == f"**{name}**"
        assert int(row[1].replace(",", "")) == (frame["label"] == name).sum()
        for offset, kind in ((2, "precision"), (5, "recall")):
            old, new, delta = (float(c) for c in row[offset : offset + 3])
            assert old == pytest.approx(base[kind][i], abs=5e-5)
            assert new == pytest.approx(pr[kind][i], abs=5e-5)
            assert delta == pytest.approx(pr[kind][i] - base[kind][i], abs=1e-4)


def test_predicted_against_actual_is_each_bins_mean(sides: Sides, comment: str) -> None:
    if of_another_task(sides, "regression", comment, "Predictions against actual values"):
        return
    chart = charts(section(comment, "Predictions against actual values"))[0]
    actual, base, pr = lines_of(chart)
    frame = predictions(sides.other)
    deciles = pd.qcut(frame["label"], 10, labels=False)
    assert actual == pytest.approx(
        list(frame.groupby(deciles)["label"].mean().map(lambda v: float(f"{v:.4g}"))), rel=1e-3
    )
    assert pr == pytest.approx(list(frame.groupby(deciles)["prediction"].mean()), rel=1e-3)
    # BASE's rows are the same test rows here: the same bins
    before = predictions(sides.base).set_index("id").loc[frame["id"]]
    means = before["prediction"].groupby(deciles.to_numpy()).mean()
    assert base == pytest.approx(list(means), rel=1e-3)
    assert lines_of(chart)[0] == sorted(actual)


def test_the_residuals_histogram_is_numpys(sides: Sides, comment: str) -> None:
    if of_another_task(sides, "regression", comment, "Predictions against actual values"):
        return
    chart = charts(section(comment, "Predictions against actual values"))[1]
    base, pr = lines_of(chart)
    residuals = {
        name: (f["label"] - f["prediction"]).to_numpy()
        for name, f in (("base", predictions(sides.base)), ("pr", predictions(sides.other)))
    }
    spread = np.quantile(np.abs(np.concatenate(list(residuals.values()))), RESIDUAL_RANGE)
    edges = np.linspace(-spread, spread, RESIDUAL_BINS + 1)
    for drawn, values in ((base, residuals["base"]), (pr, residuals["pr"])):
        counts, _ = np.histogram(np.clip(values, -spread, spread), edges)
        assert drawn == pytest.approx(list(counts / len(values)), abs=1e-4)
        assert sum(drawn) == pytest.approx(1.0, abs=1e-3)


def test_the_segment_table_shows_the_tasks_metrics_base_and_pr(sides: Sides, comment: str) -> None:
    names = SEGMENT_METRICS[sides.task]  # type: ignore[index]
    text = section(comment, "Error by segment" if sides.task == "regression" else "Segments")
    assert all(f"{label_of(n)} base | PR | Δ" in text for n in names)
    base, pr = sides.base.json("segments.json"), sides.other.json("segments.json")
    (column,) = pr
    table = rows_of(text)
    assert len(table) == len(pr[column])
    for row in table:
        group = row[0].removeprefix(f"{column} = ")
        assert int(row[1].replace(",", "")) == pr[column][group]["rows"]
        for i, name in enumerate(names):
            old, new, delta = (float(c) for c in row[2 + 3 * i : 5 + 3 * i])
            assert old == pytest.approx(base[column][group][name], abs=5e-5)
            assert new == pytest.approx(pr[column][group][name], abs=5e-5)
            assert delta == pytest.approx(new - old, abs=2e-4)


def test_the_card_section_shows_the_tasks_headline_and_gaps(sides: Sides, comment: str) -> None:
    """The card's segment metrics: card.segment_metrics when they are the task's (a generated
    repository's), else the task's headline (the template's binary ones in a test project)."""
    text = section(comment, "Model card")
    (column,) = sides.other.json("segments.json")
    configured = yaml.safe_load(PARAMS.read_text())["card"]["segment_metrics"]
    task_metrics = METRICS[sides.task]  # type: ignore[index]
    names = configured if set(configured) <= set(task_metrics) else headline(sides.task)  # type: ignore[arg-type]
    gaps = {row[0] for row in rows_of(text) if " gap across " in row[0]}
    assert gaps == {f"{label_of(n)} gap across {column}" for n in names}
    shown = {row[0] for row in rows_of(text)}
    assert {label_of(n) for n in METRICS[sides.task]} & shown  # type: ignore[index]


def test_a_clearly_worse_model_fails_the_gate_naming_the_metric(sides: Sides) -> None:
    worse = sides.report(sides.dummy)
    primary = {"regression": "rmse", "multiclass": "log_loss"}[sides.task]
    first = render(worse).splitlines()[0]
    assert first.startswith("❌ **Gate failed**")
    assert re.search(rf"regressed beyond tolerance: [a-z0-9_, ]*\b{primary}\b", first)
    document = report.gate_document(worse)
    document = json.loads(json.dumps(document, allow_nan=False))
    assert document["verdict"] == "fail"
    assert document["exit_code"] == 1
    assert document["metrics"][primary]["verdict"] == "regressed"
    assert f"{primary} regressed" in document["reason"]
    assert set(document["metrics"]) == set(RULES[sides.task])


def test_the_same_model_passes_with_the_tasks_metrics_unchanged(sides: Sides) -> None:
    same = sides.report(sides.base)
    document = report.gate_document(same)
    assert document["verdict"] == "pass"
    assert {m["verdict"] for m in document["metrics"].values()} == {"unchanged"}
    comment = render(same)
    if sides.task == "multiclass":
        assert "(+" not in section(comment, "Confusion matrix")  # every change is ±0
    rows = len(predictions(sides.base))
    assert f"| latency, {rows:,} rows (median of 5) | " in comment  # both models timed
    timed = section(comment, "Model\n").split("| MLflow run |")[0]  # no registry here
    assert "n/a" not in timed


def test_the_first_model_of_a_task_shows_its_sections_without_base(
    sides: Sides, tmp_path: Path
) -> None:
    pr = outputs(sides.other)
    result = gate.compare(None, pr.side(), sides.params())
    first = Report(Base("main", "0" * 36, "none", None), result, sides.params(), pr)
    comment = render(first)
    assert comment.startswith("✅ **Gate passed (first model)**")
    if sides.task == "regression":
        assert [len(lines_of(c)) for c in charts(comment)] == [2, 1]  # actual + PR; PR
    else:
        assert "(+" not in comment
        assert "precision base" in comment


def test_a_confusion_matrix_of_many_classes_keeps_the_largest_and_merges_the_rest() -> None:
    rng = np.random.default_rng(0)
    classes = tuple(f"c{i}" for i in range(30))
    label = rng.choice(30, 3000, p=np.arange(1, 31) / np.arange(1, 31).sum())
    predicted = np.where(rng.random(3000) < 0.7, label, rng.integers(0, 30, 3000))
    probability = np.eye(30)[predicted]
    pr = MulticlassPredictions(np.arange(3000), label, probability, predicted, classes)
    text = "\n".join(confusion_section(None, pr))
    table = rows_of(text)
    frequent = pd.Series(label).value_counts().nlargest(MATRIX_CLASSES - 1).index
    largest = [f"c{i}" for i in sorted(frequent)]  # in the model's class order
    assert [row[0] for row in table] == [f"**{c}**" for c in largest] + [f"**{OTHER}**"]
    counts = np.array([[int(c.replace(",", "")) for c in row[1:]] for row in table])
    assert counts.sum() == 3000
    frame = pd.DataFrame({"label": label, "predicted": predicted}).map(
        lambda v: f"c{v}" if f"c{v}" in largest else OTHER
    )
    expected = pd.crosstab(frame["label"], frame["predicted"])
    order = [*largest, OTHER]
    np.testing.assert_array_equal(counts, expected.loc[order, order].to_numpy())
    assert len(text) < 2_000
