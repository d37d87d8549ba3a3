"""The feature schema: inference from data, validation of hand edits, YAML round trip, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import yaml

from pipelines.params import load_paths
from pipelines.schema import (
    HEADER,
    MAX_CATEGORIES,
    Feature,
    Rows,
    Schema,
    SchemaError,
    Target,
    dump_schema,
    infer_feature,
    infer_schema,
    infer_task,
    load_schema,
    main,
)
from tests.support.columns import PARAMS, ROOT

SCHEMA_FILE = load_paths(PARAMS).schema_

# Column names as a new table may have them: spaces, dots, capitals, dashes, non-ASCII letters.
TARGET = "Loan Status"
ROW_ID = "row id"
FEATURES = ["is.senior", "Ünits-Held", "Plan Type", "Monthly Income"]


def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ROW_ID: [1, 2, 3, 4, 5, 6],
            TARGET: ["good", "bad", "good", "good", "bad", "good"],
            "is.senior": [0, 1, 0, 0, 1, 0],
            "Ünits-Held": [1, 10, 20, 30, 40, 72],
            "Plan Type": ["Monthly", "Yearly", "Monthly", "Biennial", "Monthly", "Yearly"],
            "Monthly Income": [20.5, np.nan, 35.0, 80.25, 99.0, 110.0],
        }
    )


def rows60() -> pd.DataFrame:
    """The table ten times over, with new ids."""
    return pd.concat([table()] * 10, ignore_index=True).assign(**{ROW_ID: range(60)})


# --- infer_feature ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind", "low", "high"),
    [
        pytest.param([0, 1, 1, 0], "integer", 0, 1, id="binary-int-keeps-0-1"),
        pytest.param([1.0, 0.0, 1.0], "number", 0, 1, id="binary-float-keeps-0-1"),
        pytest.param([10, 20, 30], "integer", 0, 40, id="widened-by-half-span"),
        pytest.param([100, 150, 200], "integer", 50, 250, id="widened-both-sides"),
        pytest.param([1234, 1500], "integer", 1100, 1700, id="rounded-outward-2-digits"),
        pytest.param([2, 50], "integer", 0, 74, id="non-negative-not-below-zero"),
        pytest.param([0.1, 0.2], "number", 0.05, 0.25, id="small-floats"),
        pytest.param([-10, -5], "integer", -13, -2.5, id="negative-range"),
        pytest.param([-50, 50], "integer", -100, 100, id="range-across-zero"),
        pytest.param([7, 7, 7], "integer", 7, 7, id="constant"),
    ],
)
def test_infer_numeric_range(values: list[float], kind: str, low: float, high: float) -> None:
    column = pd.Series(values, name="x")
    feature = infer_feature(column)

    assert feature.type == kind
    assert (feature.min, feature.max) == (low, high)
    assert feature.min <= min(values)
    assert feature.max >= max(values)
    assert feature.categories is None
    assert feature.max_null_fraction == 0
    assert not feature.nullable


def test_infer_float_with_nulls_allows_some_nulls() -> None:
    feature = infer_feature(pd.Series([0.5, None, 1.5, 2.0], name="x"))

    assert feature.type == "number"
    assert feature.nullable
    # a quarter missing: twice that is allowed, so one more missing value next time still passes
    assert feature.max_null_fraction == 0.5
    assert feature.min == 0
    assert feature.max == 2.8


def test_infer_null_fraction_is_capped_at_one() -> None:
    feature = infer_feature(pd.Series([None, None, None, 1.5], name="x", dtype="float64"))
    assert feature.max_null_fraction == 1.0


@pytest.mark.parametrize(
    ("values", "categories", "null_fraction"),
    [
        (["b", "a", "b", "c"], ("a", "b", "c"), 0.0),
        (["Yes", None, "No", "Yes"], ("No", "Yes"), 0.5),
        ([True, False, True], ("False", "True"), 0.0),
    ],
)
def test_infer_text_column_gives_sorted_categories(
    values: list[object], categories: tuple[str, ...], null_fraction: float
) -> None:
    feature = infer_feature(pd.Series(values, name="x"))

    assert feature.type == "category"
    assert feature.categories == categories
    assert feature.max_null_fraction == null_fraction
    assert (feature.min, feature.max) == (None, None)


def test_infer_category_limit_is_inclusive() -> None:
    values = [f"v{i:03d}" for i in range(MAX_CATEGORIES)]
    assert infer_feature(pd.Series(values, name="x")).categories == tuple(values)


def test_infer_too_many_distinct_strings_is_refused() -> None:
    column = pd.Series([f"person-{i}" for i in range(MAX_CATEGORIES + 1)], name="email")
    with pytest.raises(SchemaError, match=rf"'email' has {MAX_CATEGORIES + 1} distinct") as error:
        infer_feature(column)
    assert "drop it or encode it" in str(error.value)


# --- infer_schema -----------------------------------------------------------------------------


def test_infer_schema_of_a_table() -> None:
    frame = table()
    schema = infer_schema(frame, TARGET, ROW_ID, "bad")

    assert schema.target == Target(column=TARGET, positive="bad", values=("good", "bad"))
    assert schema.id == ROW_ID
    assert list(schema.features) == FEATURES
    assert [f.type for f in schema.features.values()] == [
        "integer",
        "integer",
        "category",
        "number",
    ]
    assert schema.features["Plan Type"].categories == ("Biennial", "Monthly", "Yearly")
    assert schema.features["Monthly Income"].nullable
    assert schema.rows == Rows(min=3, max=60)
    assert schema.columns == [ROW_ID, *FEATURES, TARGET]


def test_an_audit_column_is_in_the_table_but_never_a_feature() -> None:
    schema = infer_schema(table(), TARGET, ROW_ID, "bad", audit=("is.senior",))

    assert list(schema.features) == FEATURES[1:]
    assert list(schema.audit) == ["is.senior"]
    assert schema.audit["is.senior"] == Feature(type="integer", min=0, max=1)
    assert list(schema.checked) == [*FEATURES[1:], "is.senior"]
    assert schema.columns == [ROW_ID, *FEATURES[1:], "is.senior", TARGET]


def test_infer_schema_names_an_audit_column_that_is_not_in_the_table() -> None:
    with pytest.raises(SchemaError, match="'sex' is not in the table"):
        infer_schema(table(), TARGET, ROW_ID, "bad", audit=("sex",))
    with pytest.raises(SchemaError, match="is the target or id"):
        infer_schema(table(), TARGET, ROW_ID, "bad", audit=(ROW_ID,))


@pytest.mark.parametrize(("target", "id_column"), [("label", ROW_ID), (TARGET, "row_id")])
def test_infer_schema_missing_column(target: str, id_column: str) -> None:
    missing = target if target == "label" else id_column
    with pytest.raises(SchemaError, match=rf"column '{missing}' is not in the table"):
        infer_schema(table(), target, id_column, "bad")


@pytest.mark.parametrize(
    "classes",
    [["good", "bad", "maybe", "good", "bad", "good"], ["good"] * 6],
    ids=["three-classes", "one-class"],
)
def test_a_binary_schema_needs_two_classes(classes: list[str]) -> None:
    frame = table().assign(**{TARGET: classes})
    with pytest.raises(SchemaError, match="must have two classes"):
        infer_schema(frame, TARGET, ROW_ID, "bad", task="binary")


@pytest.mark.parametrize(
    ("values", "task", "why"),
    [
        (["No", "Yes"] * 50, "binary", "two distinct values ('No', 'Yes')"),
        ([0, 1] * 50, "binary", "two distinct values (0, 1)"),
        (["a", "b", "c", "d"] * 25, "multiclass", "text with 4 distinct values"),
        ([True, False, True, None] * 25, "binary", "two distinct values"),
        ([1, 2, 3, 4, 5] * 20, "multiclass", "only 5 distinct values in 100 rows"),
        ([1.0, 2.0, 3.0] * 400, "multiclass", "only 3 distinct values in 1,200 rows"),
        (list(range(100)), "regression", "whole numbers with 100 distinct values"),
        ([i / 7 for i in range(100)], "regression", "numbers with 100 distinct values"),
        # whole numbers, but too many distinct ones for the rows (over 10% of 100 rows)
        ([i % 11 for i in range(100)], "regression", "whole numbers with 11 distinct values"),
        # at 1,000 rows the share is 5%: 51 values exceed MAX_CLASSES anyway
        ([i % 51 for i in range(2000)], "regression", "whole numbers with 51 distinct values"),
    ],
)
def test_the_task_is_inferred_from_the_target_and_said(
    values: list[object], task: str, why: str
) -> None:
    inferred, reason = infer_task(pd.Series(values, name="y"))
    assert inferred == task
    assert why in reason
    assert "'y'" in reason


def test_a_multiclass_schema_lists_its_classes_in_a_fixed_order_and_round_trips(
    tmp_path: Path,
) -> None:
    frame = rows60().assign(**{TARGET: ["c", "a", "b"] * 20})
    schema = infer_schema(frame, TARGET, ROW_ID)
    assert schema.target.task == "multiclass"
    assert schema.target.classes == ("a", "b", "c")
    assert schema.target.positive is None
    path = tmp_path / "schema.yaml"
    path.write_text(dump_schema(schema))
    text = path.read_text()
    assert "task: multiclass" in text
    assert "positive" not in text
    assert load_schema(path) == schema


def test_a_regression_schema_has_no_classes() -> None:
    frame = rows60().assign(**{TARGET: np.linspace(0.5, 99.5, 60)})
    schema = infer_schema(frame, TARGET, ROW_ID)
    assert schema.target.task == "regression"
    assert schema.target.labels == ()
    with pytest.raises(SchemaError, match="not numeric"):
        infer_schema(frame.assign(**{TARGET: ["x"] * 60}), TARGET, ROW_ID, task="regression")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"column": "y", "task": "binary", "values": ["a", "b"]}, "takes 'positive' and 'values'"),
        ({"column": "y", "task": "multiclass", "classes": ["a", "b"]}, "3 to 50 'classes', got 2"),
        ({"column": "y", "task": "multiclass", "classes": ["a", "b", "a"]}, "appears twice"),
        (
            {"column": "y", "task": "multiclass", "positive": "a", "classes": ["a", "b", "c"]},
            "not 'positive'",
        ),
        ({"column": "y", "task": "regression", "classes": ["a", "b", "c"]}, "takes no"),
        ({"column": "y", "task": "ordinal"}, "task"),
    ],
)
def test_a_target_that_does_not_fit_its_task_is_named(target: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Target.model_validate(target)


def test_a_schema_without_a_task_is_binary() -> None:
    target = Target.model_validate({"column": "y", "positive": "Yes", "values": ["No", "Yes"]})
    assert target.task == "binary"
    assert target.labels == ("No", "Yes")


@pytest.mark.parametrize("positive", ["1", 1])
def test_infer_schema_int_target_with_positive_given_as_text(positive: str | int) -> None:
    frame = table().assign(**{TARGET: [0, 1, 0, 0, 1, 0]})
    schema = infer_schema(frame, TARGET, ROW_ID, positive)

    assert schema.target == Target(column=TARGET, positive=1, values=(0, 1))
    assert isinstance(schema.target.positive, int)


@pytest.mark.parametrize(
    ("classes", "positive"),
    [
        pytest.param(["good", "bad", "good", "good", "bad", "good"], "maybe", id="text-target"),
        pytest.param([0, 1, 0, 0, 1, 0], 2, id="int-target"),
        pytest.param([0, 1, 0, 0, 1, 0], "yes", id="int-target-text-positive"),
    ],
)
def test_infer_schema_positive_must_be_a_class_of_the_target(
    classes: list[object], positive: str | int
) -> None:
    frame = table().assign(**{TARGET: classes})
    with pytest.raises(SchemaError, match="positive"):
        infer_schema(frame, TARGET, ROW_ID, positive)


# --- validation of the models -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "category"}, "non-empty 'categories'"),
        ({"type": "category", "categories": []}, "non-empty 'categories'"),
        ({"type": "category", "categories": ["a"], "min": 0}, "takes no 'min'/'max'"),
        ({"type": "integer", "categories": ["a"]}, "integer feature takes no 'categories'"),
        ({"type": "number", "min": 2, "max": 1}, "min 2.0 is above max 1.0"),
        ({"type": "number", "max_null_fraction": 1.5}, "max_null_fraction"),
        ({"type": "text"}, "type"),
        ({"type": "number", "maximum": 3}, "maximum"),
    ],
)
def test_invalid_feature(fields: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Feature.model_validate(fields)


def test_positive_must_be_one_of_the_values() -> None:
    with pytest.raises(pydantic.ValidationError, match="positive class 'Bad' is not one of"):
        Target(column=TARGET, positive="Bad", values=("good", "bad"))


def schema_fields(**changes: object) -> dict:
    fields: dict = {
        "target": {"column": TARGET, "positive": "bad", "values": ["good", "bad"]},
        "id": ROW_ID,
        "rows": {"min": 1, "max": 100},
        "features": {"Ünits-Held": {"type": "integer", "min": 0, "max": 100}},
    }
    return fields | changes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            schema_fields(features={TARGET: {"type": "category", "categories": ["good", "bad"]}}),
            f"'{TARGET}' is the target or id",
        ),
        (
            schema_fields(features={ROW_ID: {"type": "integer"}}),
            f"'{ROW_ID}' is the target or id",
        ),
        (schema_fields(id=TARGET), "target and id must be different"),
        (
            schema_fields(audit={"Ünits-Held": {"type": "integer", "min": 0, "max": 100}}),
            r"columns \['Ünits-Held'\] are under both features: and audit:",
        ),
        (
            schema_fields(audit={ROW_ID: {"type": "integer"}}),
            f"'{ROW_ID}' is the target or id and cannot be a feature or audited",
        ),
        (schema_fields(rows={"min": 0, "max": 10}), "rows.min"),
        (schema_fields(owner="me"), "owner"),
    ],
)
def test_invalid_schema(fields: dict, message: str) -> None:
    Schema.model_validate(schema_fields())  # the base is valid
    with pytest.raises(pydantic.ValidationError, match=message):
        Schema.model_validate(fields)


# --- dump_schema / load_schema ----------------------------------------------------------------


def awkward_schema() -> Schema:
    """Values YAML likes to reinterpret: yes/no, numbers as text, null, colons, floats."""
    return Schema(
        target=Target(column=TARGET, positive="Yes", values=("No", "Yes")),
        id=ROW_ID,
        rows=Rows(min=10, max=1000),
        features={
            "flag": Feature(type="integer", min=0, max=1),
            "ratio": Feature(type="number", min=-0.25, max=1e-05, max_null_fraction=0.0032),
            "big": Feature(type="number", min=0, max=1e20),
            "open": Feature(type="number", min=0),
            "answer": Feature(
                type="category",
                categories=("No", "Yes", "null", "1", "0.5", "on", "a: b", "# x", "", "é"),
            ),
            "described": Feature(type="integer", min=1, max=5, description="stars: 1 to 5"),
        },
    )


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(awkward_schema(), id="awkward-values"),
        pytest.param(infer_schema(table(), TARGET, ROW_ID, "bad"), id="inferred"),
        pytest.param(
            infer_schema(table().assign(**{TARGET: [0, 1, 0, 0, 1, 0]}), TARGET, ROW_ID, 1),
            id="int-target",
        ),
        pytest.param(load_schema(ROOT / SCHEMA_FILE), id="committed"),
        pytest.param(
            infer_schema(table(), TARGET, ROW_ID, "bad", audit=("Plan Type",)), id="audited"
        ),
    ],
)
def test_dump_round_trip(schema: Schema, tmp_path: Path) -> None:
    text = dump_schema(schema)

    assert text.startswith(HEADER)
    assert Schema.model_validate(yaml.safe_load(text)) == schema
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    assert load_schema(path) == schema


def test_dump_leaves_out_defaults() -> None:
    document = yaml.safe_load(dump_schema(awkward_schema()))
    assert document["features"]["flag"] == {"type": "integer", "min": 0, "max": 1}
    assert isinstance(document["features"]["flag"]["max"], int)  # 1, not 1.0
    assert "max" not in document["features"]["open"]


def test_load_missing_schema_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"does not exist: create it with `make schema`"):
        load_schema(tmp_path / "schema.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            dump_schema(awkward_schema()).replace("max: 5", "max: 0"),
            r"features\.described: .*min 1\.0 is above max 0\.0",
            id="min-above-max",
        ),
        pytest.param(
            dump_schema(awkward_schema()).replace("min: 10", "minimum: 10"),
            r"rows\.minimum: Extra inputs",
            id="unknown-key",
        ),
        pytest.param(
            dump_schema(awkward_schema()).replace("positive: 'Yes'", "positive: 'yes'"),
            r"target: .*positive class 'yes'",
            id="positive-not-a-value",
        ),
        pytest.param("", "valid dictionary", id="empty-file"),
        pytest.param("target: [label\nid: x\n", None, id="malformed-yaml"),
    ],
)
def test_load_invalid_schema_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str | None
) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message) as error:
        load_schema(path)
    assert str(path) in str(error.value)


# --- main -------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the committed params.yaml and a small raw table at paths.raw."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    raw = tmp_path / yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]["raw"]
    raw.parent.mkdir(parents=True)
    table().to_csv(raw, index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


FIRST = ["--target", TARGET, "--id", ROW_ID, "--positive", "bad"]


def test_main_writes_the_first_schema(project: Path) -> None:
    assert main(FIRST) == 0
    schema = load_schema(project / SCHEMA_FILE)
    assert schema == infer_schema(table(), TARGET, ROW_ID, "bad")


def test_main_first_schema_needs_target_id_and_positive(project: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--target", TARGET])
    assert exit_.value.code == 2
    assert not (project / SCHEMA_FILE).exists()


def test_main_refuses_to_overwrite_without_force(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(FIRST) == 0
    path = project / SCHEMA_FILE
    edited = path.read_text() + "# reviewed by a human\n"
    path.write_text(edited)
    capsys.readouterr()

    assert main(FIRST) == 1
    assert path.read_text() == edited
    assert "FORCE=1" in capsys.readouterr().err

    assert main(["--force"]) == 0  # target, id and positive come from the current schema
    assert "reviewed by a human" not in path.read_text()
    assert load_schema(path).target.positive == "bad"


def test_main_force_replaces_a_broken_schema(project: Path) -> None:
    """`make schema FORCE=1` with explicit columns is the way to start over from a bad file."""
    path = project / SCHEMA_FILE
    path.write_text("target: nonsense\n")
    assert main([*FIRST, "--force"]) == 0
    assert load_schema(path).target.column == TARGET


def test_main_reports_a_bad_column_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", "label", "--id", ROW_ID, "--positive", "bad"]) == 1
    assert "'label' is not in the table" in capsys.readouterr().err
    assert not (project / SCHEMA_FILE).exists()


def test_main_keeps_the_audit_columns_when_it_writes_the_schema_again(project: Path) -> None:
    assert main([*FIRST, "--audit", "is.senior, Plan Type"]) == 0  # names with spaces
    path = project / SCHEMA_FILE
    assert list(load_schema(path).audit) == ["is.senior", "Plan Type"]

    assert main(["--force"]) == 0  # the current schema's audit columns stay out of the model
    assert list(load_schema(path).audit) == ["is.senior", "Plan Type"]
    assert "is.senior" not in load_schema(path).features

    assert main(["--force", "--audit", ""]) == 0  # none: every column a feature again
    assert load_schema(path).audit == {}
    assert "is.senior" in load_schema(path).features
