"""`make check-lock`: the committed dvc.lock against what the code and data reproduce."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.release.lockcheck import compare_locks
from tools.scratch import ScratchRepo


def lock() -> dict[str, Any]:
    def out(path: str, md5: str) -> dict[str, Any]:
        return {"path": path, "hash": "md5", "md5": md5, "size": 10}

    return {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "python -m pipelines.stages.train",
                "deps": [
                    out("features/train.parquet", "a1"),
                    out("pipelines/stages/train.py", "b1"),
                ],
                "params": {"params.yaml": {"train": {"seed": 42, "xgboost": {"max_depth": 3}}}},
                "outs": [out("models/model", "c1.dir")],
            },
            "register": {
                "cmd": "python -m pipelines.stages.register",
                "deps": [out("models/model", "c1.dir")],
                "outs": [out("models/registry.json", "d1")],
            },
        },
    }


def test_identical_locks_match() -> None:
    assert compare_locks(lock(), lock()) == []


def test_only_the_register_stages_outputs_are_ignored() -> None:
    reproduced = lock()
    reproduced["stages"]["register"]["outs"][0]["md5"] = "another-mlflow-run"
    assert compare_locks(lock(), reproduced) == []
    reproduced["stages"]["register"]["deps"][0]["md5"] = "c2.dir"
    assert compare_locks(lock(), reproduced) == ["register.deps: models/model changed"]


def test_the_card_which_quotes_the_mlflow_run_is_ignored_as_the_run_is() -> None:
    def card(registry: str, metrics: str, out: str) -> dict[str, Any]:
        deps = [
            {"path": "models/registry.json", "md5": registry},
            {"path": "m.json", "md5": metrics},
        ]
        return {"cmd": "card", "deps": deps, "outs": [{"path": "models/card.md", "md5": out}]}

    committed, reproduced = lock(), lock()
    committed["stages"]["card"] = card("d1", "m1", "e1")
    reproduced["stages"]["register"]["outs"][0]["md5"] = "another-mlflow-run"
    reproduced["stages"]["card"] = card("another-mlflow-run", "m1", "e2")
    assert compare_locks(committed, reproduced) == []
    reproduced["stages"]["card"] = card("another-mlflow-run", "m2", "e2")
    assert compare_locks(committed, reproduced) == ["card.deps: m.json changed"]


def test_each_stage_and_field_that_differs_is_named() -> None:
    reproduced = lock()
    train = reproduced["stages"]["train"]
    train["params"]["params.yaml"]["train"]["xgboost"]["max_depth"] = 2
    train["deps"][1]["md5"] = "b2"
    train["outs"][0]["md5"] = "c2.dir"
    train["cmd"] = "python -m pipelines.stages.train --fast"
    assert compare_locks(lock(), reproduced) == [
        "train.cmd: the command changed",
        "train.deps: pipelines/stages/train.py changed",
        "train.params: params.yaml:train.xgboost.max_depth: 3 -> 2",
        "train.outs: models/model changed",
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda s: s["train"]["deps"].pop(),
            "train.deps: pipelines/stages/train.py is no longer there",
        ),
        (
            lambda s: s["train"]["params"]["params.yaml"]["train"].update(cv_folds=5),
            "train.params: params.yaml:train.cv_folds is new",
        ),
        (lambda s: s.pop("register"), "register: in the committed dvc.lock but no longer in"),
        (lambda s: s.update(evaluate={"cmd": "x"}), "evaluate: not in the committed dvc.lock"),
    ],
)
def test_added_and_removed_entries_are_named(edit: Any, expected: str) -> None:
    reproduced = copy.deepcopy(lock())
    edit(reproduced["stages"])
    assert [p for p in compare_locks(lock(), reproduced) if p.startswith(expected)]


@pytest.mark.slow
def test_check_lock_passes_on_a_committed_run_and_names_a_stale_stage(
    trained_repo: ScratchRepo, tmp_path: Path
) -> None:
    repo = trained_repo.copy(tmp_path / "project")
    repo.run("git", "commit", "-qam", "the run's dvc.lock", check=False)  # unchanged: no commit

    passed = repo.run("make", "check-lock")
    stages = len(yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"])
    assert f"dvc.lock matches what the code and data reproduce ({stages} stages)" in passed.stdout

    params = repo.path / "params.yaml"
    params.write_text(params.read_text().replace("max_depth: 3", "max_depth: 2", 1))
    repo.run("git", "commit", "-qm", "deeper trees, without dvc.lock", "params.yaml")
    failed = repo.run("make", "check-lock", check=False)
    assert failed.returncode != 0
    errors = failed.stderr
    assert "error: the committed dvc.lock differs from what the code and data reproduce" in errors
    assert "train.params: params.yaml:train.xgboost.max_depth: 3 -> 2" in errors
    assert "train.outs: models/model changed" in errors
    assert "validate" not in errors
    assert "featurize" not in errors
    assert "run `make repro` and commit dvc.lock" in errors
    assert "Traceback" not in errors
