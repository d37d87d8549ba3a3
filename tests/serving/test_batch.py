"""The batch scorer gives the model's outputs and refuses rows the schema does not allow."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.features import encode, feature_names
from pipelines.core.model import LoadedModel, load_model, save_model
from pipelines.schema import Feature, Schema
from pipelines.serving import batch as score
from tests.support.columns import (
    NUMERIC,
    ROOT,
    UNKNOWN_COLUMN,
    above,
    below,
    breaking,
    case,
    fraction,
    negative_class,
    pick,
    project_schema,
    unknown_category,
)
from tests.support.training import HALF_WIDTH, fit_on, saved_meta, small_train_params

THRESHOLD = 0.5


def save_small_model(directory: Path, raw: pd.DataFrame, schema: Schema) -> LoadedModel:
    """Fit a small XGBoost model on the real table, save it as the train stage does, load it."""
    trained = fit_on(raw, schema, small_train_params("xgboost"))
    save_model(trained.model, "xgboost", saved_meta(schema, feature_names(schema)), directory)
    return load_model(directory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    directory = tmp_path_factory.mktemp("model") / "model"
    save_small_model(directory, raw, schema)
    return directory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir)


def expected_scores(rows: pd.DataFrame, schema: Schema, model: LoadedModel) -> pd.DataFrame:
    """The task's output columns for raw rows, from the fitted XGBoost model's own methods."""
    x = encode(rows, schema)[model.meta["features"]]
    target = schema.target
    if target.task == "regression":
        y = model.model.predict(x)
        return pd.DataFrame({"prediction": y, "low": y - HALF_WIDTH, "high": y + HALF_WIDTH})
    p = model.model.predict_proba(x)
    if target.task == "multiclass":
        classes = list(target.labels)
        labels = pd.DataFrame({"label": [classes[k] for k in p.argmax(axis=1)]})
        return labels.join(pd.DataFrame(p, columns=[f"probability_{c}" for c in classes]))
    positive, negative = target.positive, negative_class(schema)
    labels = [positive if q >= THRESHOLD else negative for q in p[:, 1]]
    return pd.DataFrame({"probability": p[:, 1], "label": labels})


def assert_scores(scored: pd.DataFrame, expected: pd.DataFrame, rtol: float = 1e-6) -> None:
    """The same columns in order, the same labels, numbers within ``rtol``.

    A regression's value near 0 also gets the float32 rounding of values of its scale.
    """
    assert list(scored.columns) == list(expected.columns)
    for name in expected.columns:
        if name == "label":
            assert scored[name].astype(str).tolist() == expected[name].astype(str).tolist()
        else:
            atol = 1e-6 if name in ("prediction", "low", "high") else 0.0
            np.testing.assert_allclose(scored[name], expected[name], rtol=rtol, atol=atol)


def test_the_scores_are_the_models_outputs_for_the_same_rows(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    # Every row, those with the missing values the schema allows included.
    source, target = tmp_path / "rows.csv", tmp_path / "scores.csv"
    raw.to_csv(source, index=False)

    assert score.score_file(source, target, schema, model, THRESHOLD) == len(raw)

    scored = pd.read_csv(target, keep_default_na=False)  # a class may be written "NA"
    expected = expected_scores(raw, schema, model)
    assert list(scored.columns) == [schema.id, *expected.columns]
    assert scored[schema.id].astype(str).tolist() == raw[schema.id].astype(str).tolist()
    assert_scores(scored.drop(columns=[schema.id]), expected)


def test_a_table_without_id_and_target_is_scored_in_order(
    raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    rows = raw.drop(columns=[schema.id, schema.target.column]).iloc[::-1].head(40)
    scored = score.score(rows, schema, model, THRESHOLD)
    assert scored.index.tolist() == rows.index.tolist()
    assert_scores(scored.reset_index(drop=True), expected_scores(rows, schema, model), 1e-7)


def test_a_probability_equal_to_the_threshold_gets_the_positive_label(
    raw: pd.DataFrame, schema: Schema, model: LoadedModel
) -> None:
    if schema.target.task != "binary":
        pytest.skip(f"the schema has no binary target (a {schema.target.task} one): no threshold")
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


SCHEMA = project_schema()


def bounds(feature: Feature) -> str:
    """The range rule as the scorer words it."""
    return f"values between {feature.min:g} and {feature.max:g}"


Change = Callable[[pd.DataFrame, str], pd.DataFrame]


def bad_value(value: object, rows: int, expected: str) -> tuple[Change, str, int]:
    """A change writing ``value`` into the first ``rows`` rows, and the line's expected text."""

    def change(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        return _set(column, value, rows)(frame)

    return change, expected, rows


# Each case: a column of a kind picked from the schema, a change to 50 rows of the table and
# the text its line must hold after "<column>: " (then the ids of the rows it changed, if any).
BAD_TABLES = [
    case(
        SCHEMA,
        "unknown-category",
        "category",
        value=lambda f: bad_value(
            unknown_category(f),
            3,
            f"expected values in {list(f.categories or ())}; 3 of 50 rows fail, "
            f"e.g. {unknown_category(f)!r} (ids ",
        ),
    ),
    case(
        SCHEMA,
        "above-the-range",
        *NUMERIC,
        low=True,
        high=True,
        value=lambda f: bad_value(
            above(f), 2, f"expected {bounds(f)}; 2 of 50 rows fail, e.g. {above(f)!r} (ids "
        ),
    ),
    case(
        SCHEMA,
        "below-the-range",
        *NUMERIC,
        low=True,
        high=True,
        value=lambda f: bad_value(
            below(f), 1, f"expected {bounds(f)}; 1 of 50 rows fails, e.g. {below(f)!r} (ids "
        ),
    ),
    case(
        SCHEMA,
        "fraction-in-integer",
        "integer",
        value=lambda f: bad_value(
            fraction(f), 1, f"expected whole numbers; 1 of 50 rows fails, e.g. {fraction(f)!r}"
        ),
    ),
    case(
        SCHEMA,
        "text-in-number",
        *NUMERIC,
        value=lambda f: bad_value(
            "abc", 1, "expected a finite number; 1 of 50 rows fails, e.g. 'abc'"
        ),
    ),
    case(
        SCHEMA,
        "infinity",
        *NUMERIC,
        value=lambda f: bad_value("inf", 1, "expected a finite number; 1 of 50 rows fails"),
    ),
    case(
        SCHEMA,
        "missing-value",
        nullable=False,
        value=lambda f: bad_value(None, 4, "expected no missing values; 4 of 50 rows fail (ids "),
    ),
    pytest.param(
        next(iter(SCHEMA.features)),
        (
            lambda frame, column: frame.drop(columns=[column]),
            "missing column (the schema lists it)",
            0,
        ),
        id="missing-column",
    ),
    pytest.param(
        UNKNOWN_COLUMN,
        (
            lambda frame, column: frame.assign(**{column: 1}),
            "unexpected column (not in the schema)",
            0,
        ),
        id="unexpected-column",
    ),
]


@pytest.mark.parametrize(("column", "bad"), BAD_TABLES)
def test_a_bad_table_is_refused_naming_column_rule_and_rows(
    tmp_path: Path,
    *,
    raw: pd.DataFrame,
    schema: Schema,
    model: LoadedModel,
    column: str,
    bad: tuple[Change, str, int],
) -> None:
    change, expected, rows = bad
    source, target = tmp_path / "rows.csv", tmp_path / "scores.csv"
    change(raw.head(50).copy(), column).to_csv(source, index=False)
    target.write_text("earlier scores\n")

    with pytest.raises(score.ScoreError) as caught:
        score.score_file(source, target, schema, model, THRESHOLD)

    message = str(caught.value)
    assert f"{source}: 1 problem in 50 rows; nothing was scored:" in message
    assert f"\n  - {column}: {expected}" in message
    if expected.endswith("(ids "):
        ids = ", ".join(str(v) for v in raw[schema.id].head(rows))
        assert f"{expected}{ids})" in message
    assert target.read_text() == "earlier scores\n"  # nothing good is lost


def test_problems_name_row_numbers_without_an_id_column(raw: pd.DataFrame, schema: Schema) -> None:
    column = next(iter(schema.features))
    rows = raw.drop(columns=[schema.id]).head(10).astype({column: object})
    rows.loc[rows.index[[2, 7]], column] = breaking(schema.features[column])
    problems = score.check_table(rows, schema)
    assert [(p.column, p.bad_rows, p.where, p.where_kind) for p in problems] == [
        (column, 2, [3, 8], "rows")
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
    schema = project_schema()
    assert pd.read_csv(out)[schema.id].tolist() == raw[schema.id].head(30).tolist()


def test_the_command_refuses_bad_rows_in_one_message(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, model_dir: Path
) -> None:
    bad, out = tmp_path / "bad.csv", tmp_path / "scores.csv"
    column = pick(schema, "category") or pick(schema, *NUMERIC, high=True)
    assert column is not None, "a schema has a category or a bounded number"
    value = breaking(schema.features[column])
    _set(column, value)(raw.head(30)).to_csv(bad, index=False)
    command = [sys.executable, "-m", "pipelines.serving.batch", "--model", str(model_dir)]
    done = subprocess.run(
        [*command, str(bad), str(out)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {bad}: 1 problem in 30 rows; nothing was scored")
    assert f"\n  - {column}: expected values " in done.stderr
    assert f"; 1 of 30 rows fails, e.g. {value!r}" in done.stderr
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
    features = [feature_names(schema)[0], UNKNOWN_COLUMN]
    stale = LoadedModel(model.model, {**model.meta, "features": features})
    with pytest.raises(score.ScoreError, match=re.escape(f"no longer produces ({UNKNOWN_COLUMN})")):
        score.outputs(raw.head(5), schema, stale)
