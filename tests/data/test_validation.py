"""The validation suite accepts the real table and rejects each kind of bad data, readably.

Every kind of corruption is generated from the schema, for every column it applies to, so a new
table gets the same coverage: one corrupted table per kind, each column broken in rows of its own
(1, 2 or 3 of them), and the report must name each column with its rule and its number of rows.
Great Expectations costs ~1 s per validation, so this is one validation per kind, not per column.

Every corrupted table goes through a CSV file and ``read_raw``, as the stage sees it, so a text
value in a numeric column arrives as a text dtype, exactly as in production.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.params import load_paths
from pipelines.schema import Feature, Schema, Target
from pipelines.stages.validate import (
    Failure,
    ValidationReport,
    main,
    read_raw,
    report_json,
    summarize,
    validate_table,
)
from tests.support.columns import (
    NUMERIC,
    PARAMS,
    ROOT,
    UNKNOWN_COLUMN,
    above,
    below,
    fraction,
    pick,
    unknown_category,
)

COLUMNS = "expect_table_columns_to_match_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
UNIQUE = "expect_column_values_to_be_unique"
IN_TYPES = "expect_column_values_to_be_in_type_list"
OF_TYPE = "expect_column_values_to_be_of_type"
TYPE_CHECK = {"integer": IN_TYPES, "number": IN_TYPES, "category": OF_TYPE}
TYPE_RULE = {
    "integer": "an integer dtype",
    "number": "a numeric dtype",
    "category": "text (a string dtype)",
}
SCHEMA_FILE = load_paths(PARAMS).schema_


def through_csv(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``frame`` as the raw CSV and read it back the way the stage does."""
    frame.to_csv(path, index=False)
    return read_raw(path)


# --- what a corruption must produce -----------------------------------------------------------


def bound(value: float) -> int | float:
    """A bound as the report writes it: 110 rather than 110.0."""
    return int(value) if float(value).is_integer() else value


def range_rule(feature: Feature) -> str:
    low = None if feature.min is None else bound(feature.min)
    high = None if feature.max is None else bound(feature.max)
    if low is not None and high is not None:
        return f"values between {low} and {high}"
    return f"values >= {low}" if high is None else f"values <= {high}"


def null_rule(feature: Feature) -> str:
    if feature.nullable:
        return f"at most {feature.max_null_fraction:.2%} missing values"
    return "no missing values"


@dataclass(frozen=True)
class Broken:
    """One failure the report must hold, in the report's order (schema order).

    ``examples`` and ``row_ids`` are checked when they are not None.
    """

    column: str | None
    expectation: str
    bad_rows: int | None
    rule: str
    examples: list[object] | None = None
    row_ids: list[object] | None = None
    observed: str | None = None


@dataclass
class Corrupted:
    """A corrupted copy of the table and the failures it must cause."""

    frame: pd.DataFrame
    schema: Schema
    broken: list[Broken] = field(default_factory=list)
    _next: int = 0

    def rows(self, count: int | None = None) -> list[int]:
        """Row positions no other column of this corruption uses: 1, 2, 3, 1, 2... of them."""
        count = count if count is not None else 1 + len(self.broken) % 3
        taken = list(range(self._next, self._next + count))
        self._next += count
        return taken

    def ids(self, rows: list[int]) -> list[object]:
        """Id values of the first five of ``rows``, as the report lists them."""
        return self.frame[self.schema.id].iloc[rows[:5]].tolist()

    def put(self, column: str, rows: list[int], value: object) -> None:
        """Write ``value`` into ``column`` at row positions ``rows``."""
        # object first: pandas 3 refuses to put text or None into an int64 column.
        self.frame[column] = self.frame[column].astype(object)
        self.frame.iloc[rows, self.frame.columns.get_loc(column)] = value

    def features(self, *kinds: str) -> list[tuple[str, Feature]]:
        """The features and audit columns of ``kinds``: both are validated by the same rules."""
        return [(n, f) for n, f in self.schema.checked.items() if f.type in kinds]


Corruption = Callable[[Corrupted], None]


def other_class(schema: Schema) -> object:
    """A target value that is none of the classes, of the classes' own type."""
    values = schema.target.labels
    if all(isinstance(v, int) for v in values):
        return max(int(v) for v in values) + 1
    return unknown_category(Feature(type="category", categories=tuple(map(str, values))))


def unknown_values(c: Corrupted) -> None:
    """A target value out of the task's (an unknown class, an infinite number), and an unknown
    category in every category feature."""
    target = c.schema.target
    rows = c.rows()
    if target.task == "regression":
        value: object = float("inf")
        # The report is strict JSON: an infinite example is no example (the rule says why)
        broken = Broken(
            target.column, BETWEEN, len(rows), "finite numbers (no infinity)", [], c.ids(rows)
        )
    else:
        value = other_class(c.schema)
        rule = f"values in {list(target.labels)}"
        broken = Broken(target.column, IN_SET, len(rows), rule, [value], c.ids(rows))
    c.put(target.column, rows, value)
    c.broken.append(broken)
    for name, feature in c.features("category"):
        rows, value = c.rows(), unknown_category(feature)
        c.put(name, rows, value)
        rule = f"values in {list(feature.categories or ())}"
        c.broken.append(Broken(name, IN_SET, len(rows), rule, [value], c.ids(rows)))


def numbers_in_text_columns(c: Corrupted) -> None:
    """Category columns that hold codes (numbers) instead of their text."""
    for name, feature in c.features("category"):
        c.frame[name] = np.arange(len(c.frame)) % 3
        rows, ids = len(c.frame), c.ids(list(range(5)))
        c.broken.append(Broken(name, OF_TYPE, rows, TYPE_RULE["category"], [0, 1, 2], ids, "int64"))
        rule = f"values in {list(feature.categories or ())}"
        c.broken.append(Broken(name, IN_SET, rows, rule, [0, 1, 2], ids))


def text_in_numeric_columns(c: Corrupted) -> None:
    """Text in every integer and number column."""
    for name, feature in c.features(*NUMERIC):
        rows = c.rows()
        c.put(name, rows, "not a number")
        observed = "str (values that are not numbers)"
        c.broken.append(
            Broken(
                name,
                IN_TYPES,
                len(rows),
                TYPE_RULE[feature.type],
                ["not a number"],
                c.ids(rows),
                observed,
            )
        )


def fractions_in_integer_columns(c: Corrupted) -> None:
    """A value with a fraction, within the range, in every integer column."""
    for name, feature in c.features("integer"):
        rows, value = c.rows(), fraction(feature)
        c.put(name, rows, value)
        rule = TYPE_RULE["integer"]
        c.broken.append(Broken(name, IN_TYPES, len(rows), rule, [value], c.ids(rows), "float64"))


def values_above_the_range(c: Corrupted) -> None:
    for name, feature in c.features(*NUMERIC):
        if feature.max is not None:
            rows, value = c.rows(), above(feature)
            c.put(name, rows, value)
            rule = range_rule(feature)
            c.broken.append(Broken(name, BETWEEN, len(rows), rule, [value], c.ids(rows)))


def values_below_the_range(c: Corrupted) -> None:
    for name, feature in c.features(*NUMERIC):
        if feature.min is not None:
            rows, value = c.rows(), below(feature)
            c.put(name, rows, value)
            rule = range_rule(feature)
            c.broken.append(Broken(name, BETWEEN, len(rows), rule, [value], c.ids(rows)))


def nulls_where_not_allowed(c: Corrupted) -> None:
    """A missing target and a missing value in every feature that allows none."""
    target = c.schema.target.column
    rows = c.rows()
    c.put(target, rows, None)
    rule = "no missing target values"
    c.broken.append(Broken(target, NOT_NULL, len(rows), rule, [], c.ids(rows)))
    for name, feature in c.schema.checked.items():
        if feature.nullable:
            continue
        rows = c.rows()
        c.put(name, rows, None)
        if feature.type == "integer":
            # A missing value makes pandas read an integer column as floats: the dtype rule
            # fails too, and its line says why.
            observed = "float64 (missing values make pandas read an integer column as float)"
            rule = TYPE_RULE["integer"]
            c.broken.append(Broken(name, IN_TYPES, len(rows), rule, [], c.ids(rows), observed))
        c.broken.append(Broken(name, NOT_NULL, len(rows), null_rule(feature), [], c.ids(rows)))


def missing_ids(c: Corrupted) -> None:
    rows = c.rows(2)
    c.put(c.schema.id, rows, None)
    c.broken.append(Broken(c.schema.id, NOT_NULL, 2, "no missing ids", []))


def too_many_nulls(c: Corrupted) -> None:
    """More missing values than ``max_null_fraction`` allows, in every nullable feature."""
    used: set[int] = set()
    total = len(c.frame)
    for name, feature in c.schema.checked.items():
        if not feature.nullable or feature.max_null_fraction >= 1:
            continue
        missing = c.frame[name].isna().to_numpy()
        allowed = int(feature.max_null_fraction * total)
        more = allowed + 1 - int(missing.sum())
        present = [i for i in np.flatnonzero(~missing) if i not in used][:more]
        used.update(present)
        c.put(name, present, None)
        c.broken.append(Broken(name, NOT_NULL, allowed + 1, null_rule(feature), []))


def missing_columns(c: Corrupted) -> None:
    """No id, no target and no first feature of each kind."""
    gone = {c.schema.id, c.schema.target.column}
    gone |= {name for kind in ("integer", "number", "category") if (name := pick(c.schema, kind))}
    c.frame = c.frame.drop(columns=list(gone))
    for name in c.schema.columns:  # reported in schema order
        if name in gone:
            c.broken.append(
                Broken(name, COLUMNS, None, "column listed in the schema", [], [], "missing")
            )


def an_extra_column(c: Corrupted) -> None:
    c.frame[UNKNOWN_COLUMN] = 0
    c.broken.append(
        Broken(
            UNKNOWN_COLUMN, COLUMNS, None, "only the schema's columns", [], [], "unexpected column"
        )
    )


def duplicate_id(c: Corrupted) -> None:
    first = c.frame[c.schema.id].iloc[0]
    c.put(c.schema.id, [1], first)
    c.broken.append(Broken(c.schema.id, UNIQUE, 2, "unique ids", [first], [first, first]))


def no_rows(c: Corrupted) -> None:
    c.frame = c.frame.iloc[:0]
    rows = c.schema.rows
    rule = f"between {rows.min:,} and {rows.max:,} rows"
    c.broken.append(Broken(None, ROW_COUNT, None, rule, [], [], "0"))


CORRUPTIONS: dict[str, tuple[Corruption, str | None]] = {
    # name: (corruption, the kind of feature it needs, when it needs one)
    "unknown category or class": (unknown_values, None),
    "numbers in a text column": (numbers_in_text_columns, "category"),
    "text in a numeric column": (text_in_numeric_columns, None),
    "fraction in an integer column": (fractions_in_integer_columns, "integer"),
    "value above the range": (values_above_the_range, None),
    "value below the range": (values_below_the_range, None),
    "null where not allowed": (nulls_where_not_allowed, None),
    "null id": (missing_ids, None),
    "too many nulls": (too_many_nulls, None),
    "missing columns": (missing_columns, None),
    "extra column": (an_extra_column, None),
    "duplicate id": (duplicate_id, None),
    "empty table": (no_rows, None),
}


def first_line(broken: Broken) -> str:
    """How the summary line of ``broken`` starts."""
    where = broken.column if broken.column is not None else "(table)"
    if broken.expectation == COLUMNS:
        if broken.observed == "missing":
            return f"{where}: missing column (the schema lists it)"
        return f"{where}: unexpected column (not in the schema)"
    return f"{where}: expected {broken.rule}"


# --- the real table passes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_report(raw: pd.DataFrame, schema: Schema, suite) -> ValidationReport:
    return validate_table(raw, schema, suite)


def test_raw_passes(good_report: ValidationReport, raw: pd.DataFrame) -> None:
    assert good_report.failures == []
    assert good_report.success
    rows = f"{len(raw):,} row" + ("" if len(raw) == 1 else "s")
    assert summarize(good_report, len(raw)) == (
        f"Data validation passed: {good_report.evaluated} expectations on {rows}."
    )


def test_raw_passes_with_the_missing_values_it_has(
    good_report: ValidationReport, raw: pd.DataFrame, schema: Schema
) -> None:
    nullable = [name for name, feature in schema.features.items() if feature.nullable]
    if not nullable:
        pytest.skip("the schema has no nullable feature")
    for name in nullable:
        (nulls,) = [
            r
            for r in good_report.result["results"]
            if r["expectation_config"]["type"] == NOT_NULL
            and r["expectation_config"]["kwargs"]["column"] == name
        ]
        assert nulls["success"], name
        assert nulls["result"]["unexpected_count"] == raw[name].isna().sum(), name


def test_raw_passes_after_another_csv_round_trip(
    raw: pd.DataFrame, schema: Schema, suite, tmp_path: Path
) -> None:
    frame = through_csv(raw, tmp_path / "raw.csv")
    pd.testing.assert_frame_equal(frame, raw)
    for name, feature in schema.features.items():
        if feature.type == "category":  # read_csv gives pandas 3's `str` dtype: text
            assert frame[name].dtype == "str", name
    report = validate_table(frame, schema, suite)
    assert report.failures == []
    assert report.success


def test_every_expectation_is_evaluated(good_report: ValidationReport, schema: Schema) -> None:
    # columns, rows, id (2), target (nulls, then a classifier's classes or a regression's dtype
    # and finite range), and per feature and audit column: dtype, nulls, categories or range
    target = 3 if schema.target.task == "regression" else 2
    per_feature = sum(
        2 + (f.categories is not None) + (f.min is not None or f.max is not None)
        for f in schema.checked.values()
    )
    assert good_report.evaluated == 4 + target + per_feature
    assert all(r["success"] for r in good_report.result["results"])


# --- every kind of bad data fails, naming column, rule and rows --------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_fails_naming_column_rule_and_rows(
    name: str, raw: pd.DataFrame, schema: Schema, suite, tmp_path: Path
) -> None:
    corruption, needs = CORRUPTIONS[name]
    if needs is not None and pick(schema, needs) is None:
        pytest.skip(f"the schema has no {needs} feature")
    corrupted = Corrupted(raw.copy(), schema)
    corruption(corrupted)
    if not corrupted.broken:
        pytest.skip(f"the schema has no column for the corruption {name!r}")
    frame = through_csv(corrupted.frame, tmp_path / "raw.csv")

    report = validate_table(frame, schema, suite)

    assert not report.success
    expected = corrupted.broken
    assert [(f.column, f.expectation, f.bad_rows) for f in report.failures] == [
        (b.column, b.expectation, b.bad_rows) for b in expected
    ]
    summary = summarize(report, len(frame), SCHEMA_FILE)
    lines = summary.splitlines()
    assert len(lines) == 1 + len(expected) + 3
    for failure, broken, line in zip(report.failures, expected, lines[1:], strict=False):
        assert failure.rule == broken.rule
        if broken.examples is not None:
            assert failure.examples == broken.examples, failure
        if broken.row_ids is not None:
            assert failure.row_ids == broken.row_ids, failure
        if broken.observed is not None and broken.expectation != COLUMNS:
            assert failure.observed == broken.observed
        assert len(failure.examples) <= 5
        assert len(failure.row_ids) <= 5
        assert line.startswith(f"  - {first_line(broken)}")
        if broken.bad_rows is not None:
            rows = f"{broken.bad_rows:,} row" + ("" if broken.bad_rows == 1 else "s")
            assert f"; {rows} (" in line
    assert f"edit {SCHEMA_FILE}" in summary
    assert "Traceback" not in summary
    assert "raised" not in summary


def test_missing_column_is_reported_once_without_exceptions(
    raw: pd.DataFrame, schema: Schema, suite
) -> None:
    feature = next(iter(schema.features))
    report = validate_table(raw.drop(columns=[feature, schema.id]), schema, suite)
    assert report.failures == [
        # in schema order, not GX's alphabetical order
        Failure(COLUMNS, schema.id, "column listed in the schema", None, observed="missing"),
        Failure(COLUMNS, feature, "column listed in the schema", None, observed="missing"),
    ]
    # GX records the expectations on the missing columns as raised; the file keeps the
    # message but no traceback.
    raised = [r for r in report.result["results"] if r["exception_info"]["raised_exception"]]
    assert raised
    assert "exception_traceback" not in json.dumps(report.result)


def test_examples_are_capped_at_five(
    raw: pd.DataFrame, schema: Schema, suite, tmp_path: Path
) -> None:
    frame = raw.copy()
    frame[schema.target.column] = [f"class {i % 9}" for i in range(len(frame))]
    report = validate_table(through_csv(frame, tmp_path / "raw.csv"), schema, suite)
    (failure,) = report.failures
    # text is none of a classifier's classes, and no number for a regression
    expected = IN_TYPES if schema.target.task == "regression" else IN_SET
    assert (failure.column, failure.expectation) == (schema.target.column, expected)
    assert failure.bad_rows == len(frame)
    assert failure.examples == [f"class {i}" for i in range(5)]
    assert failure.row_ids == raw[schema.id].head(5).tolist()


def test_text_in_a_regression_target_is_named_with_its_rows(
    raw: pd.DataFrame, schema: Schema, tmp_path: Path
) -> None:
    """The target's dtype check has no feature of the schema behind it, and still names rows."""
    column = schema.target.column
    regression = schema.model_copy(update={"target": Target(column=column, task="regression")})
    frame = raw.assign(**{column: np.arange(len(raw)) / 2})
    corrupted = Corrupted(frame, regression)
    corrupted.put(column, [2, 3], "not a number")

    report = validate_table(through_csv(corrupted.frame, tmp_path / "raw.csv"), regression)

    (failure,) = report.failures
    assert (failure.column, failure.expectation) == (column, IN_TYPES)
    assert failure.rule == TYPE_RULE["number"]
    assert (failure.bad_rows, failure.examples) == (2, ["not a number"])
    assert failure.row_ids == corrupted.ids([2, 3])
    assert failure.observed == "str (values that are not numbers)"


# --- the stage's command ------------------------------------------------------------------------


def run_main(raw: Path, out: Path) -> int:
    return main(["--raw", str(raw), "--schema", str(ROOT / SCHEMA_FILE), "--out", str(out)])


RAW_NAME = load_paths(PARAMS).raw.name


def test_main_passes_good_data_and_writes_the_same_bytes_twice(
    raw: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / RAW_NAME
    raw.to_csv(csv, index=False)
    out = tmp_path / "reports" / "validation.json"  # the parent does not exist yet

    assert run_main(csv, out) == 0
    first = out.read_bytes()
    assert run_main(csv, out) == 0

    assert out.read_bytes() == first
    document = json.loads(first)
    assert document["success"] is True
    assert document["failures"] == []
    assert "ge_load_time" not in first.decode()
    captured = capsys.readouterr()
    assert "Data validation passed" in captured.out
    assert captured.err == ""  # no GX progress bars or warnings
    assert [p.name for p in out.parent.iterdir()] == ["validation.json"]  # no temp file left


def test_main_fails_bad_data_but_still_writes_the_report(
    raw: pd.DataFrame, schema: Schema, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / RAW_NAME
    corrupted = Corrupted(raw.copy(), schema)
    if schema.target.task == "regression":
        value: object = "not a number"
        rule = TYPE_RULE["number"]
    else:
        value = other_class(schema)
        rule = f"values in {list(schema.target.labels)}"
    corrupted.put(schema.target.column, [4], value)
    corrupted.frame.to_csv(csv, index=False)
    out = tmp_path / "validation.json"

    assert run_main(csv, out) == 1
    first = out.read_bytes()
    assert run_main(csv, out) == 1

    assert out.read_bytes() == first
    document = json.loads(first)
    assert document["success"] is False
    assert [f["column"] for f in document["failures"]] == [schema.target.column]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Data validation FAILED" in captured.err
    assert f"{schema.target.column}: expected {rule}" in captured.err
    assert repr(value) in captured.err
    assert str(out) in captured.err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda d: None, "does not exist: get it with `make data`", id="missing"),
        pytest.param(lambda d: (d / RAW_NAME).write_text(""), "No columns", id="empty"),
        pytest.param(
            lambda d: (d / RAW_NAME).write_bytes(b"a,b\n\xff\xfe,1\n"),
            "codec",
            id="not utf-8",
        ),
    ],
)
def test_main_unreadable_raw_file_is_a_one_line_error(
    setup: Callable[[Path], object],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup(tmp_path)
    out = tmp_path / "validation.json"
    assert run_main(tmp_path / RAW_NAME, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_main_bad_schema_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("target: {column: label}\n")
    out = tmp_path / "validation.json"
    code = main(["--raw", "x.csv", "--schema", str(schema), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {schema}: ")
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_report_json_is_strict_and_sorted(good_report: ValidationReport) -> None:
    text = report_json(good_report)
    assert json.loads(text)["result"] == good_report.result
    assert "NaN" not in text
    assert text == report_json(good_report)


def test_importing_the_stage_does_not_import_great_expectations() -> None:
    code = "import sys, pipelines.stages.validate; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
