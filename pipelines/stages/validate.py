"""Validate the raw table against the schema with Great Expectations (the ``validate`` stage).

The expectation suite is built from ``schema.yaml``, the one schema, so validation, the
featurizer and the service cannot disagree about what a good row is. The full result is written
as deterministic JSON (DVC hashes it); a failure exits 1 with one readable line per problem.

Usage: ``python -m pipelines.stages.validate`` (paths default to the ``paths:`` of ``params.yaml``)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.core.io import run_stage, write_atomically
from pipelines.core.leaks import Leak, likely_leaks
from pipelines.params import ParamsError, load_paths
from pipelines.schema import Feature, Schema, SchemaError, Target, load_schema, read_raw

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.expectations import Expectation

MAX_EXAMPLES = 5

# Names GX 1.24 resolves against a pandas dtype. "int"/"float" cover object columns, which GX
# checks value by value; "Int64Dtype" and friends are pandas' nullable dtypes.
INTEGER_TYPES = (
    *(f"int{bits}" for bits in (8, 16, 32, 64)),
    *(f"uint{bits}" for bits in (8, 16, 32, 64)),
    *(f"Int{bits}Dtype" for bits in (8, 16, 32, 64)),
    *(f"UInt{bits}Dtype" for bits in (8, 16, 32, 64)),
    "int",
)
NUMBER_TYPES = (
    *INTEGER_TYPES,
    "float16",
    "float32",
    "float64",
    "Float32Dtype",
    "Float64Dtype",
    "float",
)
FINITE = 1e300  # a regression target's values lie within plus or minus this: no infinity
TARGET_NUMBER = Feature(type="number")  # a regression's target, for its dtype check
# pandas 3 reads text as the `str` dtype (StringDtype(na_value=nan)), which no name in
# ExpectColumnValuesToBeInTypeList matches; ExpectColumnValuesToBeOfType("str") compares the
# dtype's scalar type (`str`) instead, and checks object columns value by value.
CATEGORY_TYPE = "str"

COLUMNS_EXPECTATION = "expect_table_columns_to_match_set"
TYPE_EXPECTATIONS = (
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
)
# Keys of a GX result that change between two runs on the same data.
VOLATILE_KEYS = frozenset({"ge_load_time", "run_id", "validation_time", "exception_traceback"})


@dataclass(frozen=True)
class Failure:
    """One broken rule, in words a data scientist can act on.

    Attributes:
        expectation: The GX expectation type, e.g. ``expect_column_values_to_be_in_set``.
        column: The column, or None for a table-level rule (row count).
        rule: What the schema requires, e.g. ``values in ['own', 'rent', 'other']``.
        bad_rows: How many rows break the rule, or None when the rule is not about rows.
        examples: A few of the offending values (at most ``MAX_EXAMPLES``), distinct, in row order.
        observed: What was found instead, when the rule is not about rows (a dtype, a row count,
            a missing column), or why the rule could not be checked.
        row_ids: Id-column values of a few offending rows, when the table has the id column.
    """

    expectation: str
    column: str | None
    rule: str
    bad_rows: int | None
    examples: list[Any] = field(default_factory=list)
    observed: str | None = None
    row_ids: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one table.

    Attributes:
        success: Whether every expectation passed.
        failures: One entry per broken rule, in schema order; empty on success.
        result: The full GX result as a JSON-able dict, with everything that changes between
            two runs on the same data (timestamps, run ids, tracebacks) removed.
    """

    success: bool
    failures: list[Failure]
    result: dict[str, Any]

    @property
    def evaluated(self) -> int:
        """How many expectations were evaluated."""
        return int(self.result.get("statistics", {}).get("evaluated_expectations", 0))


def _gx() -> Any:
    """Import Great Expectations offline (no analytics), only when validation runs."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx

    return gx


def _number(value: float) -> int | float:
    """A bound as the schema author wrote it: 110 rather than 110.0."""
    return int(value) if float(value).is_integer() else value


def _target_expectations(target: Target) -> list[Expectation]:
    """A classifier's target holds its classes; a regression's, finite numbers."""
    import great_expectations.expectations as gxe

    if target.task == "regression":
        return [
            gxe.ExpectColumnValuesToBeInTypeList(
                column=target.column,
                type_list=list(NUMBER_TYPES),
                meta={"rule": "a numeric dtype"},
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column=target.column,
                min_value=-FINITE,
                max_value=FINITE,
                meta={"rule": "finite numbers (no infinity)"},
            ),
        ]
    classes = list(target.labels)
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column=target.column, value_set=classes, meta={"rule": f"values in {classes}"}
        )
    ]


def _feature_expectations(name: str, feature: Feature) -> list[Expectation]:
    """The expectations of one feature column: type, nulls, then categories or range."""
    import great_expectations.expectations as gxe

    expectations: list[Expectation] = []
    if feature.type == "category":
        expectations.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=name, type_=CATEGORY_TYPE, meta={"rule": "text (a string dtype)"}
            )
        )
    else:
        integer = feature.type == "integer"
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=name,
                type_list=list(INTEGER_TYPES if integer else NUMBER_TYPES),
                meta={"rule": "an integer dtype" if integer else "a numeric dtype"},
            )
        )
    if feature.nullable:
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=name,
                mostly=1 - feature.max_null_fraction,
                meta={"rule": f"at most {feature.max_null_fraction:.2%} missing values"},
            )
        )
    else:
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(column=name, meta={"rule": "no missing values"})
        )
    if feature.categories is not None:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=list(feature.categories),
                meta={"rule": f"values in {list(feature.categories)}"},
            )
        )
    if feature.min is not None or feature.max is not None:
        low = None if feature.min is None else _number(feature.min)
        high = None if feature.max is None else _number(feature.max)
        if low is not None and high is not None:
            rule = f"values between {low} and {high}"
        else:
            rule = f"values >= {low}" if high is None else f"values <= {high}"
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=low, max_value=high, meta={"rule": rule}
            )
        )
    return expectations


def build_suite(schema: Schema) -> ExpectationSuite:
    """Build the expectation suite of the raw table from the schema.

    The suite checks: the exact column set; the row count; the id column (not null, unique);
    the target (not null, one of its two values); and each feature's dtype, missing values,
    categories and range. Each expectation carries its human-readable rule in ``meta["rule"]``.

    Args:
        schema: The feature schema.

    Returns:
        A suite not attached to any data context; build it once and validate many tables.
    """
    gx = _gx()
    import great_expectations.expectations as gxe

    target = schema.target
    expectations: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=schema.columns,
            exact_match=True,
            meta={"rule": "exactly the schema's columns"},
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=schema.rows.min,
            max_value=schema.rows.max,
            meta={"rule": f"between {schema.rows.min:,} and {schema.rows.max:,} rows"},
        ),
        gxe.ExpectColumnValuesToNotBeNull(column=schema.id, meta={"rule": "no missing ids"}),
        gxe.ExpectColumnValuesToBeUnique(column=schema.id, meta={"rule": "unique ids"}),
        gxe.ExpectColumnValuesToNotBeNull(
            column=target.column, meta={"rule": "no missing target values"}
        ),
        *_target_expectations(target),
    ]
    for name, feature in schema.checked.items():
        expectations.extend(_feature_expectations(name, feature))
    return gx.ExpectationSuite(name="raw-table", expectations=expectations)


def _run_suite(frame: pd.DataFrame, suite: ExpectationSuite, id_column: str) -> dict[str, Any]:
    """Validate ``frame`` with an ephemeral (in-memory) context; the raw GX result as a dict."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # tqdm bars would clutter the stage's log and the tests' output.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("raw")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("table")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result_format: dict[str, Any] = {"result_format": "SUMMARY"}
    if id_column in frame.columns:
        # Name offending rows by id instead of by position; a missing id column would make
        # every row-level expectation raise, so only ask when it is there.
        result_format["unexpected_index_column_names"] = [id_column]
    return batch.validate(suite, result_format=result_format).to_json_dict()


def _clean(value: Any) -> Any:
    """Drop volatile keys recursively and turn non-finite floats into None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _exception(result: dict[str, Any]) -> str | None:
    """The message of an expectation that raised, or None; GX keys these by metric id."""
    info = result.get("exception_info") or {}
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = sorted({str(v.get("exception_message")) for v in info.values() if v})
    return "; ".join(messages) if messages else None


def _order_key(config: dict[str, Any]) -> tuple[str, str | None]:
    return config["type"], config.get("kwargs", {}).get("column")


def make_deterministic(raw: dict[str, Any], suite: ExpectationSuite) -> dict[str, Any]:
    """Make a GX result byte-stable across runs on the same data.

    GX returns results in metric-resolution order, not suite order, stamps the batch with its
    load time and keeps tracebacks (with absolute paths) keyed by hashed metric ids. This puts
    results in suite order, drops timestamps, run ids and tracebacks, and keeps one exception
    message per result.
    """
    order = {
        _order_key(e.configuration.to_json_dict()): i for i, e in enumerate(suite.expectations)
    }
    results = []
    for result in raw.get("results", []):
        message = _exception(result)
        info: dict[str, Any] = {"raised_exception": message is not None}
        if message is not None:
            info["exception_message"] = message
        config = {k: v for k, v in result["expectation_config"].items() if k != "id"}
        results.append({**result, "exception_info": info, "expectation_config": config})
    results.sort(key=lambda r: order.get(_order_key(r["expectation_config"]), len(order)))
    cleaned = {k: v for k, v in raw.items() if k not in ("id", "results")}
    return _clean({**cleaned, "results": results})


def _distinct(values: list[Any], limit: int = MAX_EXAMPLES) -> list[Any]:
    """Up to ``limit`` distinct non-null values, in order."""
    seen: list[Any] = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value in seen:
            continue
        seen.append(value)
        if len(seen) == limit:
            break
    return seen


def _row_ids(frame: pd.DataFrame, rows: pd.Index, id_column: str) -> list[Any]:
    if id_column not in frame.columns:
        return []
    return _clean(frame.loc[rows[:MAX_EXAMPLES], id_column].tolist())


def _type_offenders(
    frame: pd.DataFrame, column: str, feature: Feature, id_column: str
) -> tuple[int | None, list[Any], str, list[Any]]:
    """Find the rows behind a failed dtype check, which GX only reports as a dtype.

    Returns:
        The number of offending rows (None if they cannot be told apart), a few offending
        values, what was observed, and the ids of a few offending rows.
    """
    series = frame[column]
    observed = str(series.dtype)
    values = series.dropna()
    if feature.type == "category":
        bad = values  # a numeric column where text is expected: every value is a number
    elif not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna()]
        observed += " (values that are not numbers)"
    else:  # a float column where integers are expected
        bad = values[values != values.round()]
        if bad.empty and series.isna().any():
            bad = series[series.isna()]
            observed += " (missing values make pandas read an integer column as float)"
    if bad.empty:
        return None, [], observed, []
    return (
        len(bad),
        _distinct(_clean(bad.tolist())),
        observed,
        _row_ids(frame, bad.index, id_column),
    )


def _failures(results: list[dict[str, Any]], frame: pd.DataFrame, schema: Schema) -> list[Failure]:
    """Turn failed results into one ``Failure`` per broken rule.

    A missing column makes every expectation on it raise, and a wrong dtype makes the range
    check raise: those are consequences, reported once through the column or dtype failure.
    """
    failed = [r for r in results if not r["success"]]
    missing: set[str] = set()
    wrong_type: set[str] = set()
    for result in failed:
        config = result["expectation_config"]
        if config["type"] == COLUMNS_EXPECTATION:
            missing.update(
                result["result"].get("details", {}).get("mismatched", {}).get("missing", [])
            )
        elif config["type"] in TYPE_EXPECTATIONS and _exception(result) is None:
            wrong_type.add(config["kwargs"]["column"])

    failures: list[Failure] = []
    for result in failed:
        config = result["expectation_config"]
        kind, column = config["type"], config["kwargs"].get("column")
        rule = (config.get("meta") or {}).get("rule", kind)
        details = result.get("result") or {}
        message = _exception(result)
        if kind == COLUMNS_EXPECTATION:
            # GX lists the mismatches alphabetically; report them in the order of the schema
            # and of the table, as a reader scans them.
            failures += [
                Failure(kind, name, "column listed in the schema", None, observed="missing")
                for name in schema.columns
                if name in missing
            ]
            unexpected = set(details.get("details", {}).get("mismatched", {}).get("unexpected", []))
            failures += [
                Failure(kind, name, "only the schema's columns", None, observed="unexpected column")
                for name in map(str, frame.columns)
                if name in unexpected
            ]
        elif message is not None:
            if column in missing or column in wrong_type:
                continue
            failures.append(
                Failure(kind, column, rule, None, observed=f"could not be checked: {message}")
            )
        elif kind in TYPE_EXPECTATIONS and details.get("unexpected_count") is None:
            # the features' dtypes, and a regression's target, which holds numbers
            feature = schema.checked.get(column, TARGET_NUMBER)
            bad_rows, examples, observed, ids = _type_offenders(frame, column, feature, schema.id)
            failures.append(Failure(kind, column, rule, bad_rows, examples, observed, ids))
        elif "unexpected_count" in details:
            failures.append(
                Failure(
                    kind,
                    column,
                    rule,
                    int(details["unexpected_count"]),
                    _distinct(details.get("partial_unexpected_list") or []),
                    row_ids=_result_row_ids(details, schema.id),
                )
            )
        else:  # an aggregate rule (row count): GX reports what it saw
            seen = _describe(details.get("observed_value"))
            failures.append(Failure(kind, column, rule, None, observed=seen))
    return failures


def _result_row_ids(details: dict[str, Any], id_column: str) -> list[Any]:
    """Ids of a few offending rows, from a result asked for ``unexpected_index_column_names``."""
    if details.get("unexpected_index_column_names") != [id_column]:
        return []  # the table has no id column: GX gave row positions, which mean little
    rows = details.get("partial_unexpected_index_list") or []
    return [row.get(id_column) for row in rows[:MAX_EXAMPLES] if isinstance(row, dict)]


def _describe(observed: Any) -> str | None:
    if observed is None:
        return None
    return f"{observed:,}" if isinstance(observed, int) else str(observed)


def validate_table(
    frame: pd.DataFrame, schema: Schema, suite: ExpectationSuite | None = None
) -> ValidationReport:
    """Validate a raw table against the schema.

    GX never raises on bad data (a missing column is a ``raised_exception`` inside the result);
    this turns its result into a list of readable failures.

    Args:
        frame: The raw table, as ``read_raw`` returns it.
        schema: The feature schema.
        suite: The suite built from ``schema`` by ``build_suite``; built here when omitted.

    Returns:
        The report: success, failures in schema order, and the deterministic full result.
    """
    suite = suite if suite is not None else build_suite(schema)
    result = make_deterministic(_run_suite(frame, suite, schema.id), suite)
    failures = _failures(result["results"], frame, schema)
    return ValidationReport(success=bool(result["success"]), failures=failures, result=result)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _failure_line(failure: Failure, rows: int) -> str:
    where = failure.column if failure.column is not None else "(table)"
    if failure.expectation == COLUMNS_EXPECTATION:
        if failure.observed == "missing":
            return f"{where}: missing column (the schema lists it)"
        return f"{where}: unexpected column (not in the schema)"
    line = f"{where}: expected {failure.rule}"
    if failure.observed is not None:
        line += f", found {failure.observed}"
    if failure.bad_rows is not None:
        share = f" ({failure.bad_rows / rows:.2%})" if rows else ""
        verb = "fails" if failure.bad_rows == 1 else "fail"
        line += f"; {_plural(failure.bad_rows, 'row')}{share} {verb}"
    if failure.examples:
        line += ", e.g. " + ", ".join(repr(v) for v in failure.examples)
    if failure.row_ids:
        line += f" (ids {', '.join(str(v) for v in failure.row_ids)})"
    return line


def summarize(report: ValidationReport, rows: int, schema_path: Path | None = None) -> str:
    """A readable summary of a validation: one line per failure and what to do next.

    Args:
        report: The validation report.
        rows: Number of rows of the validated table.
        schema_path: The schema file, named in the advice on intended changes.

    Returns:
        Multi-line text; a single line when everything passed.
    """
    if report.success:
        return (
            f"Data validation passed: {_plural(report.evaluated, 'expectation')} "
            f"on {_plural(rows, 'row')}."
        )
    schema_name = str(schema_path) if schema_path is not None else "the schema file"
    lines = [
        f"Data validation FAILED: {_plural(len(report.failures), 'problem')} "
        f"in a table of {_plural(rows, 'row')}:",
        *(f"  - {_failure_line(failure, rows)}" for failure in report.failures),
        "What to do next:",
        "  - If the data is wrong, fix it at its source and add the corrected table again.",
        f"  - If the change is intended (a new category, a wider range, more missing values), "
        f"edit {schema_name} and have the change reviewed like code: it changes what the model "
        "accepts in production.",
    ]
    return "\n".join(lines)


def report_json(report: ValidationReport, leaks: list[Leak] | None = None) -> str:
    """The report as stable JSON text: same data, same bytes.

    Likely leaks (:mod:`pipelines.core.leaks`), when there are any, are listed under ``leaks``:
    the pull-request comment warns of them.
    """
    document: dict[str, Any] = {
        "success": report.success,
        "failures": [asdict(failure) for failure in report.failures],
        "result": report.result,
    }
    if leaks:
        document["leaks"] = [asdict(leak) for leak in leaks]
    return json.dumps(_clean(document), indent=2, sort_keys=True, allow_nan=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Validate the raw table, write the full result and print a summary.

    Returns:
        0 when the table passes, 1 when it fails or cannot be read.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="raw table (default: paths.raw in params.yaml)")
    parser.add_argument("--schema", type=Path, help="schema (default: paths.schema)")
    parser.add_argument("--out", type=Path, help="result JSON (default: paths.validation)")
    args = parser.parse_args(argv)

    try:
        if None in (args.raw, args.schema, args.out):
            paths = load_paths()
            args.raw = args.raw or paths.raw
            args.schema = args.schema or paths.schema_
            args.out = args.out or paths.validation
        schema = load_schema(args.schema)
    except (ParamsError, SchemaError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        frame = read_raw(args.raw)
    except FileNotFoundError:
        print(f"error: {args.raw} does not exist: get it with `make data`", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        # ValueError: pandas' ParserError and EmptyDataError, and UnicodeDecodeError.
        reason = " ".join(str(error).split())
        print(f"error: cannot read {args.raw} as a CSV table: {reason}", file=sys.stderr)
        return 1

    report = validate_table(frame, schema)
    leaks = likely_leaks(frame, schema) if report.success else []
    try:
        text = report_json(report, leaks)
        write_atomically(args.out, lambda partial: partial.write_text(text))
    except OSError as error:
        print(f"error: cannot write {args.out}: {error}", file=sys.stderr)
        return 1
    summary = summarize(report, len(frame), args.schema)
    if report.success:
        print(summary)
        for leak in leaks:
            print(f"warning: {leak}", file=sys.stderr)
        return 0
    print(f"{summary}\nFull result: {args.out}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_stage(main)
