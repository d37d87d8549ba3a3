"""Shared fixtures of the data tests: the real raw table, its schema and the GX suite.

Great Expectations costs ~11 s to import and ~1 s per validation, so the schema, the suite and
the real table's report are built once per session and shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines.schema import Schema

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def suite(schema: Schema) -> ExpectationSuite:
    """The expectation suite built from the real schema, shared by every validation."""
    from pipelines.stages.validate import build_suite

    return build_suite(schema)
