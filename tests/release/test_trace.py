"""Lineage from an image: labels -> commit, data, stages, run, gate, card; `make trace` for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.core.io import PipelineError
from pipelines.release import trace
from pipelines.release.image import gate_label
from pipelines.review.report import gate_summary
from tests.support.registries import push_manifest
from tools.scratch import ScratchRepo

COMMIT = "a" * 40
LOCK = yaml.safe_dump(
    {
        "schema": "2.0",
        "stages": {
            "train": {"outs": [{"path": "models/model", "md5": "m1.dir"}]},
            "card": {"outs": [{"path": "models/card.md", "md5": "c1"}]},
        },
    }
)
DVC_FILE = yaml.safe_dump({"outs": [{"md5": "d1.dir", "path": "data"}]})
LABELS = {
    "git_commit": COMMIT,
    "git_dirty": "false",
    "data_md5": "d1.dir",
    "mlflow_run_id": "run1",
    "mlflow_model_uri": "models:/m/3",
}


@pytest.mark.parametrize(
    "inspected",
    [
        {"Name": "r/x", "Labels": {"a": "1"}},  # skopeo inspect
        [{"Id": "x", "Config": {"Labels": {"a": "1"}}}],  # podman image inspect
    ],
)
def test_labels_come_from_skopeo_or_podman(inspected: object) -> None:
    assert trace.image_labels(inspected) == {"a": "1"}


def test_an_image_without_labels_has_none_and_garbage_is_an_error() -> None:
    assert trace.image_labels({"Labels": None}) == {}
    with pytest.raises(PipelineError, match="not a JSON object"):
        trace.image_labels("text")


def test_labels_and_git_give_the_lineage() -> None:
    found = trace.lineage(
        "r/x@sha256:1", LABELS, lock_text=LOCK, dvc_file_text=DVC_FILE, card="# c"
    )
    assert (found.commit, found.data_md5, found.recorded_data_md5) == (COMMIT, "d1.dir", "d1.dir")
    assert found.stages == {"train": {"models/model": "m1.dir"}, "card": {"models/card.md": "c1"}}
    assert (found.mlflow_run_id, found.mlflow_model_uri) == ("run1", "models:/m/3")
    assert found.gate == trace.NOT_RECORDED
    assert not found.problems
    text = trace.render(found)
    assert f"- Commit: {COMMIT}" in text
    assert "- train: models/model m1.dir" in text
    assert text.rstrip().endswith("# c")
    assert "not recorded" in text


def test_disagreements_and_unknown_commits_are_problems() -> None:
    labels = LABELS | {"data_md5": "other.dir", "git_dirty": "true"}
    found = trace.lineage("i", labels, lock_text=LOCK, dvc_file_text=DVC_FILE, card=None)
    assert any("differs from d1.dir" in p for p in found.problems)
    assert any("uncommitted" in p for p in found.problems)
    unknown = trace.lineage("i", LABELS, lock_text=None, dvc_file_text=None, card=None)
    assert any("git fetch" in p for p in unknown.problems)
    assert unknown.stages == {}
    bare = trace.lineage("i", {}, lock_text=None, dvc_file_text=None, card=None)
    assert any("no git_commit label" in p for p in bare.problems)
    assert "Not available" in trace.render(bare)


GATE = {
    "verdict": "pass",
    "base": {"ref": "b" * 40, "commit": "b" * 40},
    "mode": "paired",
    "metrics": {
        m: {"verdict": v}
        for m, v in [("auc", "improved"), ("f1", "unchanged"), ("brier", "unchanged")]
    },
}


@pytest.mark.parametrize(
    ("document", "line"),
    [
        (GATE, f"pass against {'b' * 40}, paired: 1 improved, 2 unchanged"),
        (
            {
                "verdict": "fail",
                "base": {"ref": "main", "commit": "c" * 40},
                "reason": "f1 regressed",
            },
            f"fail against main ({'c' * 12}): f1 regressed",
        ),
        (
            {"verdict": "error", "base": {"ref": "0" * 40}, "reason": "no such\n commit"},
            f"error against {'0' * 40}: no such commit",
        ),
    ],
)
def test_a_gate_verdict_is_one_line(document: dict[str, object], line: str) -> None:
    assert gate_summary(document) == line


def test_make_image_gate_labels_the_verdict_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps(GATE))
    assert gate_label(gate) == {"gate_verdict": gate_summary(GATE)}
    gate.write_text("[]")
    with pytest.raises(PipelineError, match="is not a gate verdict"):
        gate_label(gate)
    with pytest.raises(PipelineError, match="make report"):
        gate_label(tmp_path / "missing.json")
    labelled = LABELS | {"gate_verdict": gate_summary(GATE)}
    found = trace.lineage("i", labelled, lock_text=LOCK, dvc_file_text=None, card=None)
    assert found.gate == gate_summary(GATE)
    assert f"- Gate verdict of the merge: {found.gate}" in trace.render(found)


def test_trace_needs_an_image_or_an_overlay() -> None:
    with pytest.raises(PipelineError, match="give an image or an overlay"):
        trace.main([])


@pytest.mark.slow
def test_make_trace_reads_an_image_in_a_registry(
    image_registry: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A labelled image in a real registry: `make trace` reads it and git at its commit."""
    repo = ScratchRepo.create(tmp_path_factory.mktemp("trace"))
    commit = repo.run("git", "rev-parse", "HEAD").stdout.strip()
    data_md5 = yaml.safe_load(repo.read("data.dvc"))["outs"][0]["md5"]
    labels = LABELS | {
        "git_commit": commit,
        "data_md5": data_md5,
        "gate_verdict": "pass against main",
    }
    digest = push_manifest(image_registry, "trace/model", "v1", labels=labels)
    image = f"{image_registry}/trace/model@{digest}"

    done = repo.run("make", "--no-print-directory", "trace", f"IMAGE={image}", check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"# Lineage of {image}" in out
    assert f"- Commit: {commit}" in out
    assert f"- Data hash: {data_md5} (data.dvc at the commit: {data_md5})" in out
    assert "- MLflow run: run1" in out
    assert "- Gate verdict of the merge: pass against main" in out
    lock = yaml.safe_load(repo.read("dvc.lock"))
    some_stage, entry = next(iter(lock["stages"].items()))
    assert f"- {some_stage}: {entry['outs'][0]['path']} {entry['outs'][0]['md5']}" in out

    missing = repo.run("make", "trace", f"IMAGE={image_registry}/trace/none:v9", check=False)
    assert missing.returncode != 0
    assert "cannot inspect" in missing.stderr
