"""The comparison with an earlier release: its request fields, its bodies, the verdict, the skip."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import previous
from benchmarks.load import BenchError

# A record as BentoML 1.4's /docs.json describes it: the body's schema refers to the record's,
# a nullable number is an anyOf with null, a category is a string with an enum.
OPENAPI = {
    "paths": {
        "/predict": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/RecordsIODescriptor"}
                        }
                    }
                }
            }
        }
    },
    "components": {
        "schemas": {
            "RecordsIODescriptor": {
                "type": "object",
                "properties": {
                    "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}
                },
            },
            "Record": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "flag": {"type": "integer", "minimum": 0.0, "maximum": 1.0},
                    "plan": {"type": "string", "enum": ["a", "b c"]},
                    "amount": {"anyOf": [{"type": "number", "maximum": 9.0}, {"type": "null"}]},
                },
            },
        }
    },
}


def test_the_fields_and_kinds_of_a_record_are_read_through_references() -> None:
    fields = previous.record_fields(OPENAPI)
    assert fields == {"flag": "integer", "plan": "category", "amount": "number"}


def test_a_document_without_records_is_an_error_naming_the_route() -> None:
    with pytest.raises(BenchError, match="/predict"):
        previous.record_fields({"paths": {}})


def test_bodies_hold_each_field_of_the_row_as_json_has_it() -> None:
    rows = pd.DataFrame(
        {
            "flag": [1.0, 0.0],  # whole numbers read as floats stay whole
            "plan": ["b c", None],
            "amount": [2.5, float("nan")],
            "unasked": [7, 8],  # a column the service does not take is left out
        }
    )
    bodies = [json.loads(b) for b in previous.bodies_of(rows, previous.record_fields(OPENAPI))]
    assert bodies == [
        {"records": [{"flag": 1, "plan": "b c", "amount": 2.5}]},
        {"records": [{"flag": 0, "plan": None, "amount": None}]},
    ]
    assert isinstance(bodies[0]["records"][0]["flag"], int)


def test_a_field_the_table_lacks_is_named() -> None:
    with pytest.raises(BenchError, match=r"\['plan'\]"):
        previous.bodies_of(pd.DataFrame({"flag": [1], "amount": [2.0]}), {"plan": "category"})


def loads(ours: list[float], prior: list[float]) -> dict[str, dict[str, list[float]]]:
    return {str(clients): {"ours": ours, "previous": prior} for clients in previous.CLIENTS}


@pytest.mark.parametrize(
    ("ours", "prior", "passed"),
    [
        ([960.0, 1000.0, 1010.0], [1000.0, 1005.0, 990.0], True),  # medians 1000 / 1000
        ([940.0, 945.0, 2000.0], [1000.0, 990.0, 1010.0], False),  # one fast round is no win
        ([950.0, 951.0, 952.0], [1000.0, 1000.0, 1000.0], True),  # 0.951: just within
        ([949.0, 949.0, 949.0], [1000.0, 1000.0, 1000.0], False),  # 0.949: just outside
    ],
)
def test_the_verdict_is_the_ratio_of_medians_against_the_target(
    ours: list[float], prior: list[float], passed: bool
) -> None:
    checks = previous.checks({"loads": loads(ours, prior), "commit": "f" * 40})
    assert [c.passed for c in checks] == [passed] * len(previous.CLIENTS)
    expected = statistics.median(ours) / statistics.median(prior)
    assert all(c.value == pytest.approx(expected) for c in checks)
    assert previous.TARGET == 0.95  # within 5% of the earlier release's throughput


def test_the_report_shows_every_round_and_the_verdicts() -> None:
    results = {
        "loads": loads([990.0, 1010.0], [1000.0, 1000.0]),
        "commit": "0123456789abcdef",
        "settings": {
            "cores": 2,
            "load_average_before": [0.5, 0, 0],
            "load_average_after": [1.5, 0, 0],
            "rounds": 2,
            "seconds": 5.0,
        },
    }
    text = previous.report(results)
    assert "990 1010" in text
    assert "0123456789, 8 clients" in text
    assert text.count("PASS") == len(previous.CLIENTS)


def test_a_ref_this_history_lacks_is_skipped_with_a_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert previous.commit_of("HEAD") is not None
    assert previous.main(["--ref", "no-such-release-anywhere"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("skipped: no-such-release-anywhere is not a commit of this repository")


def test_the_earlier_release_gets_none_of_this_checkouts_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in previous.FOREIGN:
        monkeypatch.setenv(name, "this checkout")
    env = previous.ref_env(tmp_path)
    assert not set(previous.FOREIGN) - {"BENTOML_HOME"} & set(env)
    assert env["BENTOML_HOME"] == str(tmp_path / ".bentoml")  # a store of its own


def test_a_worktree_built_for_the_commit_is_used_as_it_is(tmp_path: Path) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / previous.BUILT).write_text(commit + "\n")
    previous.build(commit, tmp_path, "uv")  # no worktree, no make: it was built
    assert sorted(p.name for p in tmp_path.iterdir()) == [previous.BUILT]
