"""Settings as code: the ruleset of main, the code owners, ``make github-settings`` against the
GitHub API stand-in, and the docs' list of the secrets and variables the workflows read."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pathspec
import pytest
import yaml

from pipelines.params import load_paths
from tools.act.github import GitHub, serve
from tools.github_settings import WORKFLOW_PERMISSIONS, main, repository_from_remote

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
RULESET = GITHUB / "rulesets" / "main.json"
REPOSITORY = "acme/model"
ADMIN, READER = "admin-token", "read-token"
TOKENS = {ADMIN: "write", READER: "read"}
REFERENCE = re.compile(r"\b(secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as true
    return document


WORKFLOWS = {p.name: load(p) for p in sorted((GITHUB / "workflows").glob("*.yml"))}


def ruleset() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(RULESET.read_text())
    return found


def rule(ruleset: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [r for r in ruleset["rules"] if r["type"] == kind]
    assert len(found) == 1, f"expected one {kind} rule"
    return found[0].get("parameters", {})


def on_pull_requests(workflow: dict[str, Any]) -> dict[str, Any] | None:
    """The ``pull_request`` trigger of a workflow ({} when unfiltered), or None without one."""
    triggers = workflow["on"]
    if isinstance(triggers, (str, list)):
        return {} if "pull_request" in triggers else None
    if "pull_request" not in triggers:
        return None
    return triggers["pull_request"] or {}


# --- the ruleset -------------------------------------------------------------------------------


def test_the_ruleset_protects_the_default_branch() -> None:
    wanted = ruleset()
    assert wanted["target"] == "branch"
    assert wanted["enforcement"] == "active"
    assert wanted["conditions"]["ref_name"]["include"] == ["~DEFAULT_BRANCH"]
    # a bypass (a one-person team's admin, say) may skip the review, never the pull request
    assert all(a["bypass_mode"] == "pull_request" for a in wanted["bypass_actors"])
    assert rule(wanted, "deletion") == {}
    assert rule(wanted, "non_fast_forward") == {}
    review = rule(wanted, "pull_request")
    assert review["required_approving_review_count"] >= 1
    assert review["require_code_owner_review"] is True
    assert review["dismiss_stale_reviews_on_push"] is True


def test_the_required_checks_are_the_jobs_that_run_on_every_pull_request() -> None:
    """A required check must exist on every pull request, under the name its job reports.

    A job's check is named by its ``name:``. A workflow that runs only when some paths change
    would leave its check "expected" forever on the other pull requests and block them, so it
    cannot be required (pr.yml therefore starts on every pull request and skips its gate job by
    an ``if:``); rename a job, or add a path filter, without changing the ruleset, and this fails.
    """
    every_pull_request = {
        job.get("name", key)
        for workflow in WORKFLOWS.values()
        if on_pull_requests(workflow) == {}
        for key, job in workflow["jobs"].items()
        if "strategy" not in job  # a matrix job reports one check per combination
    }
    checks = rule(ruleset(), "required_status_checks")["required_status_checks"]
    assert every_pull_request, "no workflow runs on every pull request"
    assert {c["context"] for c in checks} == every_pull_request
    filtered = [n for n, w in WORKFLOWS.items() if on_pull_requests(w)]
    for name in filtered:
        for key, job in WORKFLOWS[name]["jobs"].items():
            assert job.get("name", key) not in every_pull_request, f"{name}: {key} is filtered"


def test_the_code_owners_review_what_decides_the_model_and_where_it_runs() -> None:
    protected = [
        "params.yaml",
        str(load_paths(ROOT / "params.yaml").schema_),
        "deploy/overlays/production/kustomization.yaml",
        "deploy/argocd/staging.yaml",
        ".github/workflows/ci.yml",
        ".github/rulesets/main.json",
        ".github/rulesets/deploy.json",
        ".github/CODEOWNERS",
    ]
    lines = [
        line.split()
        for line in (GITHUB / "CODEOWNERS").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(line) > 1 and all(o.startswith("@") for o in line[1:]) for line in lines)
    for path in protected:
        assert (ROOT / path).is_file(), path
        owners = [
            line[1:]
            for line in lines
            if pathspec.PathSpec.from_lines("gitignore", [line[0]]).match_file(path)
        ]
        assert owners, f"{path} has no code owner"
    # a model's repository names its own owners, from the template's answers
    answers_file = ROOT / ".copier-answers.yml"
    if answers_file.is_file():
        answers = yaml.safe_load(answers_file.read_text())
        owners = set(answers.get("code_owners", "").split())
        assert owners <= {o for line in lines for o in line[1:]}


def test_the_pull_request_template_asks_for_the_hypothesis_the_metric_and_the_changes() -> None:
    text = (GITHUB / "pull_request_template.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[:3] == ["Hypothesis", "Metric it should move", "Data and params changed"]


# --- make github-settings against the API stand-in ----------------------------------------------


@pytest.fixture
def github() -> Iterator[GitHub]:
    with serve(GitHub(REPOSITORY, TOKENS)) as state:
        yield state


def settings(
    github: GitHub, *args: str, token: str | None = ADMIN, name: str = "GITHUB_TOKEN"
) -> int:
    environ = {"GITHUB_API_URL": github.url} | ({name: token} if token else {})
    return main(["--ruleset", str(RULESET), "--repository", REPOSITORY, *args], environ)


def test_a_dry_run_shows_the_diff_and_changes_nothing(
    github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    before = dict(github.workflow_permissions)
    assert settings(github, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"ruleset {ruleset()['name']!r}: would create" in out
    assert "Actions workflow permissions: would update" in out
    assert '-  "default_workflow_permissions": "write"' in out
    assert '+  "default_workflow_permissions": "read"' in out
    assert '+      "type": "required_status_checks"' in out
    assert "dry run, nothing changed" in out
    assert github.writes() == []
    assert github.rulesets == {}
    assert github.workflow_permissions == before


def test_apply_creates_the_ruleset_and_sets_the_permissions_then_changes_nothing(
    github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings(github) == 0
    assert [(c.method, c.path, c.status) for c in github.writes()] == [
        ("POST", f"/repos/{REPOSITORY}/rulesets", 201),
        ("PUT", f"/repos/{REPOSITORY}/actions/permissions/workflow", 204),
    ]
    (made,) = github.rulesets.values()
    wanted = ruleset()
    assert {k: made[k] for k in wanted} | {"rules": wanted["rules"]} == wanted
    assert [r["type"] for r in made["rules"]] == [r["type"] for r in wanted["rules"]]
    assert github.workflow_permissions == WORKFLOW_PERMISSIONS
    assert "created" in capsys.readouterr().out

    # GitHub answers with more than it was sent (ids, links, a default merge-method list):
    # none of it is a change
    assert settings(github) == 0
    assert len(github.writes()) == 2
    out = capsys.readouterr().out
    assert f"{REPOSITORY}: nothing to change" in out
    assert out.count(": unchanged") == 2


def test_a_ruleset_edited_by_hand_is_put_back_in_place(
    github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings(github) == 0
    (number,) = github.rulesets
    # someone drops the required checks and allows force pushes in the web UI
    github.rulesets[number]["rules"] = [
        r for r in github.rulesets[number]["rules"] if r["type"] not in {"required_status_checks"}
    ] + [{"type": "required_linear_history"}]
    github.rulesets[number]["rules"].remove({"type": "non_fast_forward"})
    capsys.readouterr()
    assert settings(github, name="GH_TOKEN") == 0
    assert github.writes()[-1].method == "PUT"
    assert github.writes()[-1].path == f"/repos/{REPOSITORY}/rulesets/{number}"
    assert list(github.rulesets) == [number]
    assert {r["type"] for r in github.rulesets[number]["rules"]} == {
        r["type"] for r in ruleset()["rules"]
    }
    out = capsys.readouterr().out
    assert "ruleset 'main': updated" in out
    assert '-      "type": "required_linear_history"' in out
    assert "Actions workflow permissions: unchanged" in out


def test_a_read_only_token_gets_githubs_403_and_says_what_token_is_needed(
    github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings(github, token=READER) == 1
    err = capsys.readouterr().err
    assert "403 'Resource not accessible" in err
    assert "Administration" in err
    assert github.rulesets == {}
    assert [c.status for c in github.writes()] == [403]


def test_a_missing_token_says_which_permissions_it_needs(
    github: GitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings(github, token=None) == 1
    err = capsys.readouterr().err
    assert "set GITHUB_TOKEN (or GH_TOKEN)" in err
    assert "Administration" in err
    assert github.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/model.git",
        "https://github.com/acme/model",
        "https://x-access-token:t@github.com/acme/model.git",
        "git@github.com:acme/model.git",
        "ssh://git@github.com/acme/model.git",
    ],
)
def test_the_repository_comes_from_the_origin_remote(url: str) -> None:
    assert repository_from_remote(url) == REPOSITORY


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "no such ruleset file"),
        ("{", "not JSON"),
        ("[]", "an object with name, target, enforcement, rules"),
        ('{"name": "main", "target": "branch", "rules": []}', "an object with enforcement"),
    ],
)
def test_a_bad_ruleset_file_is_named_with_what_it_lacks(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, said: str
) -> None:
    path = tmp_path / "ruleset.json"
    if text is not None:
        path.write_text(text)
    environ = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": ADMIN}
    assert main(["--ruleset", str(path), "--repository", REPOSITORY], environ) == 1
    assert said in capsys.readouterr().err
    assert github.calls == []


@pytest.mark.parametrize(
    ("argv", "environ", "said"),
    [
        ([], {"GITHUB_API_URL": "http://github.example.com/api/v3"}, "must be an https://"),
        (["--repository", "model"], {}, "give it as owner/name"),
    ],
)
def test_an_unsafe_api_address_or_a_bad_repository_is_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str], said: str
) -> None:
    argv = ["--ruleset", str(RULESET), *(argv or ["--repository", REPOSITORY])]
    assert main(argv, {"GITHUB_TOKEN": ADMIN} | environ) == 1
    assert said in capsys.readouterr().err


def test_without_a_repository_it_reads_the_origin_remote(
    github: GitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    remote = ["git", "-C", str(tmp_path), "remote", "add", "origin"]
    subprocess.run([*remote, f"git@github.com:{REPOSITORY}.git"], check=True)
    monkeypatch.chdir(tmp_path)
    environ = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": ADMIN}
    assert main(["--ruleset", str(RULESET), "--dry-run"], environ) == 0
    assert f"/repos/{REPOSITORY}/rulesets" in {c.path for c in github.calls}


def test_make_github_settings_applies_with_the_makefiles_variables(github: GitHub) -> None:
    """The Makefile's target as a user runs it: a dry run, then the change."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    env |= {"GITHUB_API_URL": github.url, "GH_TOKEN": ADMIN, "UV_OFFLINE": "1"}
    env.pop("GITHUB_TOKEN", None)

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["make", "--no-print-directory", "github-settings", f"REPOSITORY={REPOSITORY}"]
        return subprocess.run(
            [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )

    dry = make("DRY_RUN=1")
    assert dry.returncode == 0, dry.stderr
    assert "would create" in dry.stdout
    assert github.writes() == []
    applied = make()
    assert applied.returncode == 0, applied.stderr
    # main's, and the deploy branches' that the release writes: forward only, never deleted
    made = {r["name"]: r for r in github.rulesets.values()}
    assert set(made) == {"main", "deploy branches"}
    deploy = made["deploy branches"]
    assert deploy["conditions"]["ref_name"]["include"] == ["refs/heads/deploy/**"]
    assert {r["type"] for r in deploy["rules"]} == {"deletion", "non_fast_forward"}
    again = make()
    assert again.returncode == 0, again.stderr
    assert f"{REPOSITORY}: nothing to change" in again.stdout
    assert again.stdout.count(": unchanged") == 3


# --- the docs' secrets and variables -------------------------------------------------------------


TEAM_DOCS = "docs/team-github.md"  # the page that lists them


def read_by_workflows() -> dict[tuple[str, str, str, str], bool]:
    """(name, kind, workflow, job) of every secret and variable read -> read on pull requests."""
    kinds = {"secrets": "secret", "vars": "variable"}
    found = {}
    for file, workflow in WORKFLOWS.items():
        triggers = workflow["on"]
        on_pulls = bool({"pull_request", "pull_request_target"} & set(triggers))
        # a workflow-wide `env:` reaches every job
        shared = json.dumps({k: v for k, v in workflow.items() if k != "jobs"})
        for key, job in workflow["jobs"].items():
            for kind, name in REFERENCE.findall(shared + json.dumps(job)):
                found[(name, kinds[kind], file, key)] = on_pulls
    return found


def docs_table() -> dict[tuple[str, str, str, str], bool]:
    text = (ROOT / TEAM_DOCS).read_text()
    heading = "**Secrets and variables the workflows read**"
    assert heading in text, f"{TEAM_DOCS} has no section {heading}"
    rows = {}
    for line in text.split(heading, 1)[1].split("\n\n", 2)[1].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 6, f"a row of six cells: {line}"
        assert cells[5] in {"yes", "no"}, f"'read on pull requests' is yes or no: {line}"
        rows[(cells[0].strip("`"), cells[1], cells[2], cells[3])] = cells[5] == "yes"
    return rows


def test_the_docs_list_exactly_the_secrets_and_variables_the_workflows_read() -> None:
    read, listed = read_by_workflows(), docs_table()
    assert set(listed) - set(read) == set(), f"{TEAM_DOCS} lists what no workflow reads"
    assert set(read) - set(listed) == set(), f"add these to the table of {TEAM_DOCS}"
    assert listed == read, f"the 'read on pull requests' column of {TEAM_DOCS} is wrong"


def test_pull_request_workflows_read_no_secret_but_their_own_token() -> None:
    on_pulls = {k for k, pulls in read_by_workflows().items() if pulls and k[1] == "secret"}
    assert {name for name, *_ in on_pulls} <= {"GITHUB_TOKEN"}, on_pulls
