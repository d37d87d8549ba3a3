"""The batch scorer gives the model's probabilities and refuses rows the schema does not allow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.schema import Schema
from pipelines.serving import score
from pipelines.stages.featurize import encode, feature_names
from pipelines.stages.train import LoadedModel, load_model, save_model
from tests.conftest import ROOT, fit_on, small_train_params

THRESHOLD = 0.5


def save_small_model(directory: Path, raw: pd.DataFrame, schema: Schema) -> LoadedModel:
    """Fit a small XGBoost model on the real table, save it as the train stage does, load it."""
    trained = fit_on(raw, schema, small_train_params("xgboost"))
    save_model(trained.model, "xgboost", {"features": feature_names(schema)}, directory)
    return load_model(directory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    directory = tmp_path_factory.mktemp("model") / "model"
    save_small_model(directory, raw, schema)
    return directory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir)


def test_the_scores_are_the_models_probabilities_for_the_same_rows(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    assert raw["total_charges"].isna().sum() == 11  # rows the schema allows to miss a value
    source, target = tmp_path / "rows.csv", tmp_path / "scores.csv"
    raw.to_csv(source, index=False)

    assert score.score_file(source, target, schema, model, THRESHOLD) == len(raw)

    scored = pd.read_csv(target)
    expected = model.model.predict_proba(encode(raw, schema)[model.meta["features"]])[:, 1]
    assert list(scored.columns) == [schema.id, "probability", "label"]
    assert scored[schema.id].tolist() == raw[schema.id].tolist()
    np.testing.assert_allclose(scored["probability"], expected, rtol=1e-6)
    assert scored["label"].tolist() == np.where(expected >= THRESHOLD, "Yes", "No").tolist()
    assert {"Yes", "No"} == set(scored["label"])


def test_a_table_without_id_and_target_is_scored_in_order(
    raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    rows = raw.drop(columns=[schema.id, schema.target.column]).iloc[::-1].head(40)
    scored = score.score(rows, schema, model, THRESHOLD)
    assert list(scored.columns) == ["probability", "label"]
    assert scored.index.tolist() == rows.index.tolist()
    np.testing.assert_allclose(scored["probability"], model.predict_proba(encode(rows, schema)))


def test_a_probability_equal_to_the_threshold_gets_the_positive_label(
    raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    rows = raw.head(21)
    p = score.probabilities(rows, schema, model)
    row = int(np.argsort(p)[len(p) // 2])
    at = score.score(rows, schema, model, float(p[row]))
    above = score.score(rows, schema, model, np.nextafter(p[row], 1.0))
    assert at["probability"].iloc[row] == p[row]  # the same row scored again, to the last bit
    assert at["label"].iloc[row] == schema.target.positive
    assert above["label"].iloc[row] != schema.target.positive
    assert ((at["label"] == schema.target.positive) == (p >= p[row])).all()


def test_the_whole_real_table_passes_the_checks(raw: pd.DataFrame, schema: Schema) -> None:
    assert score.check_table(raw, schema) == []


def _set(column: str, value: object, rows: int = 1) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.loc[frame.index[:rows], column] = value
        return frame

    return change


CONTRACTS = "['Month-to-month', 'One year', 'Two year']"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _set("contract", "Monthly", rows=3),
            f"contract: expected values in {CONTRACTS}; 3 of 50 rows fail, e.g. 'Monthly' (ids ",
        ),
        (_set("tenure", 500, rows=2), "tenure: expected values between 0 and 110; 2 of 50 rows"),
        (_set("tenure", 1.5), "tenure: expected whole numbers; 1 of 50 rows fails, e.g. 1.5"),
        (_set("monthly_charges", "abc"), "monthly_charges: expected a finite number; 1 of 50"),
        (_set("monthly_charges", "inf"), "monthly_charges: expected a finite number; 1 of 50"),
        (
            _set("senior_citizen", None, rows=4),
            "senior_citizen: expected no missing values; 4 of 50 rows fail (ids 1, 2, 3, 4)",
        ),
        (
            lambda f: f.drop(columns=["tenure"]),
            "tenure: missing column (the schema lists it)",
        ),
        (
            lambda f: f.assign(tenure_months=1),
            "tenure_months: unexpected column (not in the schema)",
        ),
    ],
    ids=[
        "unknown-category",
        "out-of-range",
        "fraction-in-integer",
        "text-in-number",
        "infinity",
        "missing-value",
        "missing-column",
        "unexpected-column",
    ],
)
def test_a_bad_table_is_refused_naming_column_rule_and_rows(
    tmp_path: Path,
    *,
    raw: pd.DataFrame,
    schema: Schema,
    model: LoadedModel,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    expected: str,
) -> None:
    source, target = tmp_path / "rows.csv", tmp_path / "scores.csv"
    change(raw.head(50).copy()).to_csv(source, index=False)
    target.write_text("earlier scores\n")

    with pytest.raises(score.ScoreError) as caught:
        score.score_file(source, target, schema, model, THRESHOLD)

    message = str(caught.value)
    assert f"{source}: 1 problem in 50 rows; nothing was scored:" in message
    assert expected in message
    assert target.read_text() == "earlier scores\n"  # nothing good is lost


def test_problems_name_row_numbers_without_an_id_column(raw: pd.DataFrame, schema: Schema) -> None:
    rows = raw.drop(columns=[schema.id]).head(10).astype({"contract": object})
    rows.loc[[2, 7], "contract"] = "Weekly"
    problems = score.check_table(rows, schema)
    assert [(p.column, p.bad_rows, p.where, p.where_kind) for p in problems] == [
        ("contract", 2, [3, 8], "rows")
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), ("", "is not a CSV table"), ("a,b\n", "has no rows to score")],
)
def test_an_unreadable_table_is_refused(tmp_path: Path, content: str | None, expected: str) -> None:
    source = tmp_path / "rows.csv"
    if content is not None:
        source.write_text(content)
    with pytest.raises(score.ScoreError, match=expected):
        score.read_table(source)


def test_the_command_writes_scores(
    tmp_path: Path,
    raw: pd.DataFrame,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, out = tmp_path / "rows.csv", tmp_path / "out" / "scores.csv"
    raw.head(30).to_csv(source, index=False)
    monkeypatch.chdir(ROOT)  # params.yaml and schema.yaml of the project
    assert score.main([str(source), str(out), "--model", str(model_dir)]) == 0
    assert f"wrote {out}: 30 rows scored" in capsys.readouterr().out
    assert pd.read_csv(out)["rownames"].tolist() == raw["rownames"].head(30).tolist()


def test_the_command_refuses_bad_rows_in_one_message(
    tmp_path: Path, raw: pd.DataFrame, model_dir: Path
) -> None:
    bad, out = tmp_path / "bad.csv", tmp_path / "scores.csv"
    _set("internet_service", "Satellite")(raw.head(30)).to_csv(bad, index=False)
    command = [sys.executable, "-m", "pipelines.serving.score", "--model", str(model_dir)]
    done = subprocess.run(
        [*command, str(bad), str(out)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {bad}: 1 problem in 30 rows; nothing was scored")
    assert "internet_service: expected values in ['DSL', 'Fiber optic', 'No']; 1 of 30" in (
        done.stderr
    )
    assert not out.exists()


def test_the_command_will_not_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text("kept\n")
    with pytest.raises(score.ScoreError, match="is the input table"):
        score.main([str(source), str(tmp_path / "." / "rows.csv")])
    assert source.read_text() == "kept\n"


def test_a_model_trained_on_other_features_is_refused(
    raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    stale = LoadedModel(model.model, {**model.meta, "features": ["tenure", "tenure_months"]})
    with pytest.raises(score.ScoreError, match=r"no longer produces \(tenure_months\)"):
        score.probabilities(raw.head(5), schema, stale)
