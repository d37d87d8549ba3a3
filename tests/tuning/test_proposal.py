"""The tuning workflow's decision: a pull request only for written, better params; a notice else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.params import RegisterParams, load_section
from pipelines.tuning import proposal
from tests.support.columns import PARAMS

REPORT = {
    "metric": "roc_auc",
    "baseline": 0.84,
    "best": 0.85,
    "params": {"xgboost.max_depth": 3},
    "trials": 20,
    "best_trial": 13,
    "improved": True,
    "written": True,
}


def decide(tmp_path: Path, report: dict, *github: str) -> int:
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(report))
    return proposal.main([str(path), "--params", str(PARAMS), *github])


def test_written_better_params_are_proposed_on_the_fixed_branch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert decide(tmp_path, REPORT) == 0
    found = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    model = load_section("register", RegisterParams, PARAMS).model_name
    assert found["propose"] == "true"
    assert found["branch"] == "tune/params"
    assert found["paths"] == str(PARAMS)
    assert found["title"].startswith(f"Tune {model}: ")
    assert "0.8400 → 0.8500" in found["title"]
    assert "20 trials" in found["title"]
    assert found["reason"].startswith("trial 13 of 20 beats the current params")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"improved": False, "written": False}, "no trial of 20 beats the current params"),
        ({"written": False}, "trial 13 of 20 beats the current params, but"),
    ],
)
def test_nothing_better_or_nothing_written_proposes_nothing_with_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: dict, says: str
) -> None:
    output = tmp_path / "github-output"
    assert decide(tmp_path, REPORT | flags, "--github-output", str(output)) == 0
    found = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert found["propose"] == "false"
    printed = capsys.readouterr().out
    assert printed.startswith(f"::notice::{says}")
    assert "no pull request" in printed


def test_a_missing_report_fails_naming_make_tune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert proposal.main([str(tmp_path / "none.json"), "--params", str(PARAMS)]) == 1
    assert "run `make tune` first" in capsys.readouterr().out
