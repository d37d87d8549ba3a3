"""Request bodies from the raw table: what ``POST /predict`` (or MLflow's ``/invocations``) takes.

The first rows of the raw table, feature columns only (no target, no id), missing values as
``null``: a body the service accepts, whatever the model's columns are.

Usage: ``python -m pipelines.serving.example [--rows N] [--mlflow] > request.json``
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from pipelines.core.io import run_stage
from pipelines.params import load_paths
from pipelines.schema import Schema, load_schema, read_raw


def json_value(value: Any, kind: str) -> Any:
    """One raw value as JSON has it: null, a whole number, a float to its last digit, text."""
    if pd.isna(value):
        return None
    if kind == "category":
        return str(value)
    number = float(value)
    # An integer column with a missing value reads as floats: its numbers are still whole.
    return int(number) if kind == "integer" and number.is_integer() else number


def request_records(rows: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """Raw rows as JSON records: feature columns only, ints stay ints, missing values null.

    Floats keep every digit (pandas' ``to_json`` rounds them to 10 significant digits, which
    would score other rows than the table's).
    """
    kinds = {name: feature.type for name, feature in schema.features.items()}
    columns = {name: rows[name].tolist() for name in kinds}
    return [
        {name: json_value(columns[name][i], kind) for name, kind in kinds.items()}
        for i in range(len(rows))
    ]


def main(argv: list[str] | None = None) -> int:
    """Print a request body of the raw table's first rows."""
    paths = load_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1, help="how many rows (default 1)")
    parser.add_argument(
        "--mlflow", action="store_true", help="MLflow's body: dataframe_records, not records"
    )
    args = parser.parse_args(argv)
    records = request_records(read_raw(paths.raw).head(args.rows), load_schema(paths.schema_))
    print(json.dumps({"dataframe_records" if args.mlflow else "records": records}))
    return 0


if __name__ == "__main__":
    run_stage(main)
