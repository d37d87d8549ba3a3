"""The simulated GitHub's parts on their own: stand-in actions, the API stand-in, the coverage."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.act import standins
from tools.act.github import GitHub, serve
from tools.act.simulation import ACTIONS, SimulationError, pinned_actions

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def test_every_pinned_action_has_a_stand_in_that_declares_the_inputs_given() -> None:
    mapped = pinned_actions(WORKFLOWS)
    for path in WORKFLOWS.glob("*.yml"):
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" not in step:
                    continue
                standin = mapped[step["uses"]]
                declared = set(load(standin / "action.yml")["inputs"])
                given = set(step.get("with", {}))
                assert given <= declared, f"{path.name}: {step['uses']} given {given - declared}"


def test_an_action_without_a_stand_in_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.yml").write_text(
        "jobs:\n  a:\n    steps:\n      - uses: someone/new-action@" + "a" * 40 + "\n"
    )
    with pytest.raises(SimulationError, match="someone/new-action, which has no stand-in"):
        pinned_actions(tmp_path)
    assert {p.name for p in ACTIONS.iterdir()} >= {"checkout", "setup-uv"}


def test_every_workflow_has_a_scenario() -> None:
    scenarios = (ROOT / "tests" / "e2e" / "test_act.py").read_text()
    for path in WORKFLOWS.glob("*.yml"):
        assert f'"{path.name}"' in scenarios, f"{path.name} has no act scenario"


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment a stand-in sees inside a job; returns the workspace."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name, value in {
        "GITHUB_WORKSPACE": workspace,
        "GITHUB_OUTPUT": tmp_path / "output",
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "local/model",
        "RUNNER_TEMP": tmp_path,
        "ACT_ARTIFACTS": tmp_path / "artifacts",
        "ACT_RECORD": tmp_path / "record.jsonl",
    }.items():
        monkeypatch.setenv(name, str(value))
    return workspace


def given(monkeypatch: pytest.MonkeyPatch, **inputs: str) -> None:
    for name, value in inputs.items():
        monkeypatch.setenv("INPUT_" + name.upper(), value)


def test_an_artifact_keeps_paths_below_the_files_common_folder(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (job / "reports" / "sub").mkdir(parents=True)
    (job / "reports" / "a.md").write_text("a")
    (job / "reports" / "sub" / "b.txt").write_text("b")
    given(
        monkeypatch,
        name="report",
        path="reports/a.md\nreports/sub/*.txt\n",
        if_no_files_found="error",
    )
    standins.upload_artifact()
    with zipfile.ZipFile(tmp_path / "artifacts" / "42" / "report.zip") as archive:
        assert sorted(archive.namelist()) == ["a.md", "sub/b.txt"]
    given(monkeypatch, name="report", path=str(tmp_path / "got"), run_id="", github_token="")
    standins.download_artifact()
    assert (tmp_path / "got" / "sub" / "b.txt").read_text() == "b"
    recorded = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert [r["action"] for r in recorded] == ["upload-artifact", "download-artifact"]


def test_missing_files_fail_an_upload_that_says_error(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given(monkeypatch, name="x", path="nothing/here.md", if_no_files_found="error")
    with pytest.raises(standins.StandInError, match="no files were found"):
        standins.upload_artifact()


def test_an_archive_entry_outside_the_target_is_refused(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "artifacts" / "42").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "artifacts" / "42" / "evil.zip", "w") as archive:
        archive.writestr("../../escaped.txt", "x")
    given(monkeypatch, name="evil", path=str(tmp_path / "into"), run_id="", github_token="")
    with pytest.raises(standins.StandInError, match="points outside"):
        standins.download_artifact()
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("action", "inputs", "message"),
    [
        ("checkout", {"fetch_depth": "all"}, "fetch-depth must be a whole number"),
        ("checkout", {"persist_credentials": "yes"}, "persist-credentials must be true or false"),
        ("checkout", {"repository": "someone/else"}, "checks out local/model only"),
        ("upload-artifact", {"path": "x", "retention_days": "400"}, "retention-days"),
        ("upload-artifact", {"name": "a/b", "path": "x"}, "character GitHub refuses"),
        ("download-artifact", {"name": "x", "run_id": "7"}, "github-token is required"),
        ("login-action", {"registry": "ghcr.io", "username": "me"}, "password required"),
        (
            "attest-build-provenance",
            {"subject_name": "r/i", "subject_digest": "sha256:12"},
            "64 hex",
        ),
        ("create-pull-request", {"branch": "b"}, "input token is required"),
    ],
)
def test_inputs_the_real_action_refuses_are_refused(
    job: Path, monkeypatch: pytest.MonkeyPatch, action: str, inputs: dict[str, str], message: str
) -> None:
    given(monkeypatch, **inputs)
    with pytest.raises(standins.StandInError, match=message):
        standins.ACTIONS[action]()


def call(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_api_stand_in_answers_as_github_and_records_each_call(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commit = ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "--allow-empty"]
    subprocess.run([*commit, "-m", "x"], cwd=work, check=True)
    subprocess.run(
        ["git", "push", "-q", str(origin), "HEAD:refs/heads/feature"], cwd=work, check=True
    )
    state = GitHub("local/model", {"w": "write", "r": "read"}, origin, tmp_path / "artifacts")
    with serve(state):
        pulls = f"{state.url}/repos/local/model/pulls"
        assert call(pulls, "nobody")[0] == 401
        status, answer = call(pulls, "r", "POST", {"head": "feature", "base": "main", "title": "t"})
        assert (status, answer["message"]) == (403, "Resource not accessible by integration")
        status, created = call(
            pulls, "w", "POST", {"head": "feature", "base": "main", "title": "t"}
        )
        assert status == 201
        assert re.fullmatch(r"[0-9a-f]{40}", created["head"]["sha"])
        again = call(pulls, "w", "POST", {"head": "feature", "base": "main", "title": "t"})
        assert again == (422, {"message": "A pull request already exists for feature."})
        assert call(pulls + "?head=local:feature", "r")[1] == [created]
        assert call(pulls, "w", "POST", {"head": "no-such-branch", "title": "t"})[0] == 422
        (tmp_path / "artifacts" / "5").mkdir(parents=True)
        with zipfile.ZipFile(tmp_path / "artifacts" / "5" / "report.zip", "w") as archive:
            archive.writestr("a.md", "a")
        _, listed = call(f"{state.url}/repos/local/model/actions/runs/5/artifacts?name=report", "r")
        assert [a["name"] for a in listed["artifacts"]] == ["report"]
        assert (
            call(f"{state.url}/repos/local/model/actions/runs/6/artifacts", "r")[1]["total_count"]
            == 0
        )
    assert [(c.method, c.token, c.status) for c in state.calls][:3] == [
        ("GET", None, 401),
        ("POST", "read", 403),
        ("POST", "write", 201),
    ]


def test_an_artifact_of_the_same_name_is_refused_unless_overwrite(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """upload-artifact v4 fails a second upload of a name in one run; overwrite: true replaces."""
    (job / "a.md").write_text("first")
    given(monkeypatch, name="report", path="a.md")
    standins.upload_artifact()
    (job / "a.md").write_text("second")
    with pytest.raises(standins.StandInError, match="already exists"):
        standins.upload_artifact()
    with zipfile.ZipFile(tmp_path / "artifacts" / "42" / "report.zip") as archive:
        assert archive.read("a.md") == b"first"
    given(monkeypatch, overwrite="true")
    standins.upload_artifact()
    with zipfile.ZipFile(tmp_path / "artifacts" / "42" / "report.zip") as archive:
        assert archive.read("a.md") == b"second"


def test_create_pull_request_updates_the_open_pull_request_of_its_branch(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The second run on the same branch pushes to it and edits the open pull request (title
    and body) instead of opening another, as peter-evans/create-pull-request does."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(job)], check=True)
    commit = ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q"]
    (job / "data.csv").write_text("a\n1\n")
    subprocess.run(["git", "add", "-A"], cwd=job, check=True)
    subprocess.run([*commit, "-m", "x"], cwd=job, check=True)
    subprocess.run(["git", "remote", "add", "origin", str(origin)], cwd=job, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=job, check=True)
    state = GitHub("local/model", {"w": "write"}, origin, tmp_path / "artifacts")
    with serve(state):
        monkeypatch.setenv("GITHUB_API_URL", state.url)
        for rows, title in (("1\n2\n", "Retrain: drift"), ("1\n2\n3\n", "Retrain: more drift")):
            subprocess.run(["git", "switch", "-q", "main"], cwd=job, check=True)
            (job / "data.csv").write_text("a\n" + rows)
            inputs = {"branch": "retrain/m", "base": "main", "title": title, "body": title}
            given(monkeypatch, token="w", **inputs)  # noqa: S106 - the stand-in's test token
            standins.create_pull_request()
    (pull,) = state.pulls.values()
    assert (pull["title"], pull["body"]) == ("Retrain: more drift", "Retrain: more drift")
    assert [c.method for c in state.writes()].count("POST") == 1
    assert [c.method for c in state.writes()].count("PATCH") == 1
    shown = subprocess.run(
        ["git", "show", "retrain/m:data.csv"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "a\n1\n2\n3\n"  # the branch holds the second run's change
