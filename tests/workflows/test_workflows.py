"""Static checks of .github/: what each workflow may do, and the linters that guard them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
NAMES = {
    "ci.yml",
    "pr.yml",
    "pr-comment.yml",
    "release.yml",
    "promote.yml",
    "template-update.yml",
    "monitor.yml",
    "staging.yml",
    "tune.yml",
}
PIPELINE_INPUTS = [
    "params.yaml",
    "dvc.yaml",
    "dvc.lock",
    "data.dvc",
    "schema.yaml",
    "pipelines/**",
    "pyproject.toml",
    "uv.lock",
]
# The most each job may hold: anything beyond is a finding.
WRITE_SCOPES: dict[tuple[str, str], set[str]] = {
    ("pr-comment.yml", "comment"): {"pull-requests"},
    ("release.yml", "image"): {"packages", "id-token", "attestations"},
    ("release.yml", "staging"): {"contents"},
    ("staging.yml", "staging"): {"contents"},
}
READ_SCOPES = {"contents", "actions"}
EXTRA_READS = {("promote.yml", "alias"): {"packages"}}  # the image's labels, from ghcr.io
# The team's shared services (docs/shared-services.md): the MLflow server's address is
# a variable, its credentials and the DVC remote's keys are secrets.
MLFLOW_SECRETS = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
DVC_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
REGISTRY_SECRETS = {"IMAGE_REGISTRY_PASSWORD", "GITHUB_TOKEN"}
# Every secret each job reads; a job not listed reads none.
SECRETS: dict[tuple[str, str], set[str]] = {
    ("release.yml", "lock"): DVC_SECRETS,
    ("release.yml", "image"): MLFLOW_SECRETS | DVC_SECRETS | REGISTRY_SECRETS,
    ("promote.yml", "alias"): MLFLOW_SECRETS | REGISTRY_SECRETS,
    ("monitor.yml", "monitor"): DVC_SECRETS | {"RETRAIN_TOKEN"},
    ("tune.yml", "tune"): {"RETRAIN_TOKEN"},  # the data comes as in pr.yml, without secrets
    ("template-update.yml", "update"): {"TEMPLATE_UPDATE_TOKEN"},
    ("promote.yml", "promote"): {"PROMOTE_TOKEN"},
    ("release.yml", "alias"): MLFLOW_SECRETS,
}
# The jobs that talk to the team's MLflow server: the address, from the repository variable
TRACKED = {
    ("pr.yml", "gate"),
    ("release.yml", "image"),
    ("release.yml", "alias"),
    ("promote.yml", "alias"),
}
SECRET = re.compile(r"\bsecrets\.(\w+)")
# Checkouts that keep the token: the jobs that push staging's image (to deploy/staging).
KEEPS_CREDENTIALS = {("release.yml", "staging"), ("staging.yml", "staging")}
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
UNTRUSTED = re.compile(r"\$\{\{[^}]*\b(github\.event|inputs\.|head_ref|base_ref)")


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true
    document["on"] = document.pop(True, document.get("on"))
    return document


def workflow(name: str) -> dict[str, Any]:
    return load(GITHUB / "workflows" / name)


def jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p.name, name, job) for p in WORKFLOWS for name, job in load(p)["jobs"].items()]


def steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [(wf, name, step) for wf, name, job in jobs() for step in job.get("steps", [])]


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))


def test_the_workflows_are_there_and_parse() -> None:
    assert {p.name for p in WORKFLOWS} == NAMES
    for path in WORKFLOWS:
        document = load(path)
        assert document["name"], path.name
        assert document["jobs"], path.name


def test_triggers() -> None:
    ci = workflow("ci.yml")["on"]
    assert ci["push"] == {"branches": ["main"]}
    assert "pull_request" in ci
    # pr.yml starts on every pull request (its gate is a required check) and skips the gate job
    # when none of make's PIPELINE_INPUTS changed: the same list as release.yml's paths
    assert workflow("pr.yml")["on"] == {"pull_request": None}
    gate = workflow("pr.yml")["jobs"]["gate"]
    assert gate["needs"] == "inputs"
    assert gate["if"] == "needs.inputs.outputs.changed == 'true'"
    makefile = (ROOT / "Makefile").read_text()
    (inputs,) = re.findall(r"(?m)^PIPELINE_INPUTS := (.*)$", makefile)
    assert [p.replace("pipelines", "pipelines/**") for p in inputs.split()] == PIPELINE_INPUTS
    assert workflow("pr-comment.yml")["on"] == {
        "workflow_run": {"workflows": [workflow("pr.yml")["name"]], "types": ["completed"]}
    }
    release = workflow("release.yml")["on"]
    assert list(release) == ["push"]
    assert release["push"]["branches"] == ["main"]
    assert release["push"]["paths"] == [*PIPELINE_INPUTS, "bentofile.yaml", "!deploy/**"]
    assert workflow("promote.yml")["on"] == {
        # the shadow report of the challenger's live requests, shown in the pull request
        "workflow_dispatch": {
            "inputs": {
                "shadow_report": {
                    "description": ANY,
                    "required": False,
                    "default": "",
                    "type": "string",
                }
            }
        },
        # a merged promotion, or its revert: the production alias follows
        "push": {"branches": ["main"], "paths": ["deploy/overlays/production/**"]},
    }
    update = workflow("template-update.yml")["on"]
    assert list(update) == ["schedule", "workflow_dispatch"]
    assert update["workflow_dispatch"]["inputs"]["version"]["default"] == ""
    monitor = workflow("monitor.yml")["on"]
    assert list(monitor) == ["schedule", "workflow_dispatch"]
    tune = workflow("tune.yml")["on"]
    assert list(tune) == ["workflow_dispatch"]
    assert tune["workflow_dispatch"]["inputs"]["trials"]["type"] == "string"  # validated below


def test_the_retraining_pull_request_needs_its_token_and_comes_from_make() -> None:
    (job,) = workflow("monitor.yml")["jobs"].values()
    assert job["permissions"] == {"contents": "read"}  # the pull request uses RETRAIN_TOKEN
    first = job["steps"][0]
    assert first["env"]["TOKEN"] == "${{ secrets.RETRAIN_TOKEN }}"  # noqa: S105
    assert "::error::set the secret RETRAIN_TOKEN" in first["run"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    for target in ("production-rows", "monitor", "retrain-decision", "refresh-data"):
        assert f"make {target}" in runs or f"make --no-print-directory {target}" in runs, target
    (opens,) = [s for s in job["steps"] if "create-pull-request" in s.get("uses", "")]
    promote = next(
        s
        for s in workflow("promote.yml")["jobs"]["promote"]["steps"]
        if "create-pull" in s.get("uses", "")
    )
    assert opens["uses"] == promote["uses"]  # one pin, one stand-in
    assert opens["with"]["token"] == "${{ secrets.RETRAIN_TOKEN }}"  # noqa: S105
    assert opens["with"]["body-path"] == "reports/monitor.md"
    assert opens["if"] == "steps.decide.outputs.retrain == 'true'"


def test_the_tuning_pull_request_follows_the_retraining_one_and_comes_from_make() -> None:
    """Same token rule, same pinned action; what to propose is make's, not the YAML's."""
    (job,) = workflow("tune.yml")["jobs"].values()
    assert job["permissions"] == {"contents": "read"}  # the pull request uses RETRAIN_TOKEN
    first = job["steps"][0]
    assert first["env"] == {
        "TOKEN": "${{ secrets.RETRAIN_TOKEN }}",
        "TRIALS": "${{ inputs.trials }}",
    }
    assert "::error::set the secret RETRAIN_TOKEN" in first["run"]
    assert "whole number above 0" in first["run"]
    runs = [s.get("run", "") for s in job["steps"]]
    joined = "\n".join(runs)
    assert joined.index("make data") < joined.index('make tune TRIALS="$TRIALS"')
    assert joined.index("make tune TRIALS") < joined.index("tune-proposal")
    decide = next(s for s in job["steps"] if s.get("id") == "decide")
    assert decide["run"] == "make --no-print-directory tune-proposal"
    (opens,) = [s for s in job["steps"] if "create-pull-request" in s.get("uses", "")]
    (retrain,) = [
        s
        for s in workflow("monitor.yml")["jobs"]["monitor"]["steps"]
        if "create-pull-request" in s.get("uses", "")
    ]
    assert opens["uses"] == retrain["uses"]  # one pin, one stand-in
    assert opens["with"]["token"] == retrain["with"]["token"]
    assert opens["with"]["body-path"] == "reports/tune.md"
    assert opens["if"] == "steps.decide.outputs.propose == 'true'"
    for key in ("branch", "add-paths", "commit-message", "title"):
        assert opens["with"][key].startswith("${{ steps.decide.outputs."), key


def test_a_quiet_window_reaches_the_decision_which_alone_passes_or_fails_the_job() -> None:
    """make monitor exits non-zero on drift and on a quiet window alike (make turns 1 and 2
    into 2): the compare step lets both through, and `make retrain-decision` (a notice and
    retrain=false on a quiet window, a failure on rows it could not compare;
    tests/monitoring/test_monitor.py) decides; nothing after it runs without retraining."""
    (job,) = workflow("monitor.yml")["jobs"].values()
    steps = job["steps"]
    compare = next(s for s in steps if "make monitor " in s.get("run", ""))
    assert re.search(r"make monitor [^\n]*\|\| ", compare["run"]), compare["run"]
    decide = next(s for s in steps if s.get("id") == "decide")
    assert "retrain-decision" in decide["run"]
    assert "GITHUB_OUTPUT" in decide["run"]
    after = steps[steps.index(decide) + 1 :]
    assert after
    assert all(s["if"] == "steps.decide.outputs.retrain == 'true'" for s in after)


def test_the_promotion_pull_request_needs_its_token_before_any_work() -> None:
    """Opened with the workflow's token it would start no checks, and could never be merged."""
    job = workflow("promote.yml")["jobs"]["promote"]
    assert job["permissions"] == {"contents": "read"}  # the pull request uses PROMOTE_TOKEN
    first = job["steps"][0]
    assert first["env"] == {"TOKEN": "${{ secrets.PROMOTE_TOKEN }}"}
    assert "::error::set the secret PROMOTE_TOKEN" in first["run"]
    assert "exit 1" in first["run"]
    (opens,) = [s for s in job["steps"] if "create-pull-request" in s.get("uses", "")]
    assert opens["with"]["token"] == "${{ secrets.PROMOTE_TOKEN }}"  # noqa: S105


def test_the_template_update_needs_its_token_and_runs_only_in_a_model_repository() -> None:
    (job,) = workflow("template-update.yml")["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    ready = next(s for s in job["steps"] if s.get("id") == "ready")
    assert ready["env"] == {"TOKEN": "${{ secrets.TEMPLATE_UPDATE_TOKEN }}"}
    assert ".copier-answers.yml" in ready["run"]
    assert "::error::set the secret TEMPLATE_UPDATE_TOKEN" in ready["run"]
    later = [s for s in job["steps"][2:]]
    assert all(s["if"] == "steps.ready.outputs.run == 'true'" for s in later)
    assert any("make update-template" in s.get("run", "") for s in later)


def test_least_privilege() -> None:
    for path in WORKFLOWS:
        assert load(path)["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
    for wf, name, job in jobs():
        granted = job.get("permissions")
        assert isinstance(granted, dict), f"{wf} {name}: no explicit permissions"
        writes = {scope for scope, level in granted.items() if level == "write"}
        reads = {scope for scope, level in granted.items() if level == "read"}
        assert set(granted.values()) <= {"read", "write"}, f"{wf} {name}: {granted}"
        assert writes <= WRITE_SCOPES.get((wf, name), set()), f"{wf} {name} writes {writes}"
        allowed = READ_SCOPES | EXTRA_READS.get((wf, name), set())
        assert reads <= allowed, f"{wf} {name} reads {reads}"
    comment = workflow("pr-comment.yml")["jobs"]["comment"]["permissions"]
    assert comment == {"actions": "read", "pull-requests": "write"}


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    found = 0
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if match := USES_LINE.match(line):
                found += 1
                action, rest = match.groups()
                assert SHA_PIN.match(action), f"{path.name}: {action} is not pinned to a SHA"
                assert re.match(r"\s+# v\d+\.\d+\.\d+$", rest), f"{path.name}: {line.strip()}"
    assert found == sum(1 for _, _, step in steps() if "uses" in step)


def test_checkouts_keep_no_credentials_but_where_documented() -> None:
    checkouts = [
        (wf, job, s) for wf, job, s in steps() if s.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkouts
    for wf, job, step in checkouts:
        keeps = step.get("with", {}).get("persist-credentials")
        if (wf, job) in KEEPS_CREDENTIALS:
            assert keeps is True
            assert "keeps its credentials" in (GITHUB / "workflows" / wf).read_text()
        else:
            assert keeps is False, f"{wf} {job}: checkout without persist-credentials: false"


def test_every_job_has_a_timeout() -> None:
    for wf, name, job in jobs():
        assert isinstance(job.get("timeout-minutes"), int), f"{wf} {name}: no timeout-minutes"


def test_a_new_push_to_a_pull_request_cancels_the_older_run() -> None:
    for name in ("pr.yml", "ci.yml"):
        concurrency = workflow(name)["concurrency"]
        assert "github.event.pull_request.number" in concurrency["group"]
        assert concurrency["cancel-in-progress"] in {
            True,
            "${{ github.event_name == 'pull_request' }}",
        }
    assert workflow("pr.yml")["concurrency"]["cancel-in-progress"] is True


def test_no_expression_inside_a_run_script() -> None:
    """Untrusted values reach scripts through env:, never pasted into the shell source."""
    for wf, job, step in steps():
        script = step.get("run", "")
        assert not UNTRUSTED.search(script), f"{wf} {job}: {script!r}"
        assert "${{" not in script, f"{wf} {job}: pass expressions through env: {script!r}"


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [str(k), *strings(v)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [str(node)]


def test_the_pull_request_workflow_needs_no_secrets() -> None:
    """Forks' pull requests get no secrets and a read-only token: nothing here may need more."""
    used = strings(workflow("pr.yml"))
    assert not [s for s in used if "secrets." in s or "token" in s.lower()]
    assert "pull_request_target" not in used


def test_each_job_reads_only_its_own_secrets_and_pull_requests_none() -> None:
    """Shared-service credentials go to jobs that run on main's pushes, schedules or by hand;
    no job a pull request starts reads any secret (a fork's would get none, and its code runs)."""
    for path in WORKFLOWS:
        document = load(path)
        triggers = set(document["on"])
        for name, job in document["jobs"].items():
            read = {m for text in strings(job) for m in SECRET.findall(text)}
            assert read == SECRETS.get((path.name, name), set()), f"{path.name} {name}: {read}"
            if read:
                assert not triggers & {"pull_request", "pull_request_target"}, path.name
        # nothing outside the jobs (workflow-level env) hands a secret to every job
        rest = {k: v for k, v in document.items() if k != "jobs"}
        assert not [s for s in strings(rest) if SECRET.search(s)], path.name
    assert set(SECRETS) <= {(wf, name) for wf, name, _ in jobs()}


def test_the_tracking_server_is_a_variable_and_a_pull_request_gets_the_address_only() -> None:
    for wf, name, job in jobs():
        env = job.get("env", {})
        if (wf, name) in TRACKED:
            assert env["MLFLOW_TRACKING_URI"] == "${{ vars.MLFLOW_TRACKING_URI }}", (wf, name)
        else:  # the lock check and the monitor register nothing: no stray runs on the server
            assert "MLFLOW_TRACKING_URI" not in str(job), (wf, name)
        for secret in MLFLOW_SECRETS | DVC_SECRETS:
            if secret in SECRETS.get((wf, name), set()):
                assert env[secret] == f"${{{{ secrets.{secret} }}}}", (wf, name, secret)
    gate = workflow("pr.yml")["jobs"]["gate"]
    assert gate["env"] == {"MLFLOW_TRACKING_URI": "${{ vars.MLFLOW_TRACKING_URI }}"}
    assert "fork" in (GITHUB / "workflows" / "pr.yml").read_text()


def test_the_registry_aliases_follow_the_release_and_the_promotion() -> None:
    release = workflow("release.yml")["jobs"]
    image = release["image"]
    # only once staging's deploy succeeded, to the version the image serves (registry.json's)
    staging_alias = release["alias"]
    assert staging_alias["needs"] == ["image", "staging"]
    assert "if" not in staging_alias  # a failed or skipped deploy leaves the alias as it was
    assert staging_alias["permissions"] == {"contents": "read"}
    moves = staging_alias["steps"][-1]
    assert moves["run"] == 'make model-alias ALIAS=staging MODEL_URI="$MODEL_URI"'
    assert moves["env"] == {"MODEL_URI": "${{ needs.image.outputs.model_uri }}"}
    assert image["outputs"]["model_uri"] == "${{ steps.pushed.outputs.model_uri }}"
    pushed = next(s for s in image["steps"] if s.get("id") == "pushed")
    assert "model_uri=$(jq -r .model_uri models/registry.json)" in pushed["run"]
    everywhere = [s.get("run", "") for _, job in release.items() for s in job["steps"]]
    assert sum("model-alias" in r for r in everywhere) == 1  # nowhere before the deploy
    jobs_ = workflow("promote.yml")["jobs"]
    assert jobs_["promote"]["if"] == "github.event_name == 'workflow_dispatch'"
    alias = jobs_["alias"]
    assert alias["if"] == "github.event_name == 'push'"
    assert alias["permissions"] == {"contents": "read", "packages": "read"}
    uses = [s["uses"].split("@")[0] for s in alias["steps"] if "uses" in s]
    assert uses == ["actions/checkout", "astral-sh/setup-uv", "docker/login-action"]
    assert alias["steps"][-1]["run"] == "make model-alias ALIAS=production OVERLAY=production"
    login = next(s for s in image["steps"] if "login-action" in s.get("uses", ""))
    assert next(s for s in alias["steps"] if "login-action" in s.get("uses", "")) == login
    assert alias["env"]["REGISTRY"] == image["env"]["REGISTRY"]


def test_the_pull_request_job_reports_even_when_the_gate_fails() -> None:
    gate = workflow("pr.yml")["jobs"]["gate"]
    by_name = {s.get("name"): s for s in gate["steps"]}
    runs = [s.get("run", "") for s in gate["steps"]]
    # main's outputs from the remote first: only the stages the pull request changes run
    assert runs.index("make data") < runs.index("make dvc-pull") < runs.index("make repro")
    checkout = gate["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0
    uv = next(s for s in gate["steps"] if s.get("uses", "").startswith("astral-sh/setup-uv@"))
    assert uv["with"]["enable-cache"] is True
    report = by_name["Compare with the base branch (the gate)"]
    assert 'make report BASE="origin/${BASE_REF}"' in report["run"]
    assert report["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    upload = next(s for s in gate["steps"] if s.get("uses", "").startswith("actions/upload-"))
    assert "!cancelled()" in upload["if"]
    assert upload["with"]["path"].split() == ["reports/pr-comment.md", "reports/pr-number.txt"]
    summary = by_name["Show the report in the job summary"]
    assert "$GITHUB_STEP_SUMMARY" in summary["run"]
    last = gate["steps"][-1]
    assert "exit 1" in last["run"]
    assert last["if"] == "${{ steps.report.outputs.status != '0' }}"


def test_the_comment_workflow_never_runs_the_pull_requests_code() -> None:
    job = workflow("pr-comment.yml")["jobs"]["comment"]
    checkout, download, nothing, post = job["steps"]
    assert checkout["uses"].startswith("actions/checkout@")
    assert set(checkout["with"]) == {
        "persist-credentials",
        "sparse-checkout",
        "sparse-checkout-cone-mode",
    }  # no ref: or repository: (the default branch)
    assert checkout["with"]["sparse-checkout"] == "pipelines/review/comment.py"
    assert download["uses"].startswith("actions/download-artifact@")
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    # a run that skipped its gate left no report: nothing is posted, and nothing fails
    assert download["continue-on-error"] is True
    assert nothing["if"] == "steps.download.outcome != 'success'"
    assert post["if"] == "steps.download.outcome == 'success'"
    assert post["run"].startswith("python3 pipelines/review/comment.py")
    for flag in ("--pr-file", "--head-sha", "--body-file", "--author"):
        assert flag in post["run"]
    assert post["env"]["HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert "workflow_run.event == 'pull_request'" in job["if"]


def test_every_make_target_a_workflow_calls_exists() -> None:
    called = {
        target
        for _, _, step in steps()
        for target in re.findall(r"(?:^|[;&|]\s*|\n\s*)make\s+([a-z][\w-]*)", step.get("run", ""))
    }
    assert {"lint", "test", "data", "repro", "report", "check-lock", "bento"} <= called
    missing = called - makefile_targets()
    assert not missing, f"workflows call make targets the Makefile lacks: {sorted(missing)}"


def test_the_release_deploys_staging_by_digest_and_cannot_loop() -> None:
    release = workflow("release.yml")
    lock, image, staging = (release["jobs"][n] for n in ("lock", "image", "staging"))
    # main's outputs: pulled before the lock is checked, pushed once it matches
    assert [s.get("run") for s in lock["steps"] if "run" in s] == [
        "make data",
        "make dvc-pull",
        "make check-lock",
        "make dvc-push",
    ]
    assert lock["env"].keys() == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert image["needs"] == "lock"
    assert staging["needs"] == "image"
    runs = "\n".join(s.get("run", "") for s in image["steps"])
    image_step = 'make image IMAGE_REPO="${REGISTRY}/${GITHUB_REPOSITORY,,}" BACKEND=docker'
    assert f"{image_step} GATE=reports/gate.json" in runs
    # the merge is gated against main before the push, its model taken from the remote (or
    # rebuilt) first
    assert (
        runs.index("make dvc-pull")
        < runs.index("make repro")
        < runs.index('make report BASE="$BEFORE"')
        < runs.index(image_step)
    )
    assert "dvc-push" not in runs  # only the lock job, which proved them, pushes outputs
    report = next(s for s in image["steps"] if "make report" in s.get("run", ""))
    assert report["env"]["BEFORE"] == "${{ github.event.before }}"
    assert image["env"]["REGISTRY"] == "${{ vars.IMAGE_REGISTRY || 'ghcr.io' }}"
    assert runs.index("make push") < runs.index("make sbom")
    attest = next(s for s in image["steps"] if "attest-build-provenance" in s.get("uses", ""))
    assert attest["with"]["subject-digest"] == "${{ steps.pushed.outputs.digest }}"
    script = "\n".join(s["run"] for s in staging["steps"] if "run" in s)
    assert script == 'make deploy-staging IMAGE="$IMAGE" SOURCE="$GITHUB_SHA"'
    assert "GITHUB_TOKEN starts no workflow" in (GITHUB / "workflows" / "release.yml").read_text()
    # staging.yml writes the same branch: one at a time, and its merges are not releases
    carry = workflow("staging.yml")["jobs"]["staging"]
    assert (
        staging["concurrency"]
        == carry["concurrency"]
        == {
            "group": "deploy-staging",
            "cancel-in-progress": False,
        }
    )
    assert "!deploy/**" in release["on"]["push"]["paths"]
    assert workflow("staging.yml")["on"]["push"]["paths"] == ["deploy/**"]
    for wf, _, step in steps():
        if wf == "release.yml" and step.get("uses", "").startswith("astral-sh/setup-uv@"):
            assert step["with"]["enable-cache"] is False, "no shared cache on the publishing path"


def test_dependabot_updates_actions_and_python_weekly_in_groups() -> None:
    config = yaml.safe_load((GITHUB / "dependabot.yml").read_text())
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "uv"}
    for update in updates.values():
        assert update["schedule"]["interval"] == "weekly"
        assert update["groups"]


def test_make_lint_workflows_passes() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "lint-workflows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "No findings to report" in output
    assert output.count("ok -- validation done") == 2


BAD = """\
name: bad
on: pull_request
permissions: {}
jobs:
  greet:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    permissions:
      contents: read
    steps:
      - uses: astral-sh/setup-uv@v7
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_zizmor_catches_an_unpinned_action_and_an_injection(tmp_path: Path) -> None:
    zizmor = shutil.which("zizmor", path=str(Path(sys.executable).parent))
    if zizmor is None:
        pytest.fail("zizmor is not installed: run `make install`")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(BAD)
    done = subprocess.run(
        [zizmor, "--offline", str(tmp_path / ".github" / "workflows")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "unpinned-uses" in done.stdout
    assert "template-injection" in done.stdout
