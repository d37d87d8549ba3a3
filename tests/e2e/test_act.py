"""The workflows, run for real with act on a simulated GitHub (tools/act): one scenario each.

One simulated GitHub serves the module: an origin whose main is this project, the API stand-in,
and one DVC cache and Python environment shared by the jobs. Scenarios that move main put it
back.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipelines.core.io import PipelineError
from pipelines.params import MonitorParams, load_paths, load_section
from pipelines.release import manifests
from pipelines.release.outputs import NAMING_A_RUN
from pipelines.review.comment import MARKER
from pipelines.schema import load_schema, read_raw
from pipelines.stages.register import RegisterParams
from tests.support.columns import new_ids, pick
from tools import containers, image_e2e
from tools.act import simulation
from tools.act.simulation import WRITE_TOKEN, PullRequest, Run, Simulation, git, simulate
from tools.scratch import ScratchRepo

pytestmark = [pytest.mark.slow, pytest.mark.act]

WORSE = {
    r"^    n_estimators: \d+": "    n_estimators: 5",
    r"^    max_depth: \d+": "    max_depth: 1",
}
STAGING = "deploy/staging"  # the branch staging's Argo CD Application watches
OVERLAY = "deploy/overlays/staging/kustomization.yaml"
RESEED = {r"^(train:\n(?:  .*\n)*?)  seed: \d+": r"\g<1>  seed: 7"}


@pytest.fixture(scope="module")
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulation]:
    """A simulated GitHub whose main is this project (work in progress included)."""
    project = ScratchRepo.create(tmp_path_factory.mktemp("act-project"))
    root = tmp_path_factory.mktemp("github")
    with simulate(root, project.path, environment=Path(sys.prefix)) as sim:
        yield sim


def edit_params(work: Path, edits: dict[str, str]) -> None:
    params = work / "params.yaml"
    text = params.read_text()
    for pattern, replacement in edits.items():
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
        assert count == 1, pattern
    params.write_text(text)


def propose(
    sim: Simulation,
    work: Path,
    branch: str,
    number: int,
    edits: dict[str, str],
    *,
    fork: bool = False,
) -> PullRequest:
    """Commit params edits on a branch of ``work`` and open them as a pull request."""
    git("checkout", "-q", "-B", branch, "origin/main", cwd=work)
    edit_params(work, edits)
    git("commit", "-qam", f"{branch}: params", cwd=work)
    return sim.pull_request(work, branch, number, fork=fork)


def artifact(sim: Simulation, run: Run, name: str = "pr-comment") -> dict[str, str]:
    with zipfile.ZipFile(sim.root / "artifacts" / str(run.id) / f"{name}.zip") as archive:
        return {n: archive.read(n).decode() for n in archive.namelist()}


def marked(sim: Simulation, pr: int) -> list[dict]:
    return [c for c in sim.api.comments.get(pr, []) if MARKER in c["body"]]


def writes(run: Run) -> list[str]:
    return [f"{c.method} {c.path}" for c in run.calls if c.method != "GET"]


@pytest.fixture(scope="module")
def worse(github: Simulation, tmp_path_factory: pytest.TempPathFactory) -> tuple[PullRequest, Run]:
    """pr.yml on a pull request with clearly worse params: 5 stumps."""
    work = github.clone(tmp_path_factory.mktemp("worse") / "work")
    pull = propose(github, work, "worse-params", 11, WORSE)
    return pull, github.on_pull_request(pull, "pr.yml")


def test_a_worse_pull_request_fails_its_check_with_the_report_kept(
    github: Simulation, worse: tuple[PullRequest, Run]
) -> None:
    pull, run = worse
    assert run.jobs == {"inputs": "success", "gate": "failure"}, run.text()[-3000:]
    log = run.text()
    # The gate's own verdict fails the check, after the report was shown and uploaded
    assert "::error::the gate did not pass (make report exited 2" in log
    summary = run.summaries["gate"]
    assert summary.startswith("❌ **Gate failed**")
    assert summary.rstrip().endswith(MARKER)
    assert artifact(github, run) == {"pr-comment.md": summary, "pr-number.txt": f"{pull.number}\n"}
    assert writes(run) == []  # the pull request's run writes nothing to GitHub
    checkout = next(r for r in run.records if r["action"] == "checkout")
    assert checkout["inputs"]["fetch-depth"] == "0"  # the base branch is there to compare with
    assert checkout["inputs"]["persist-credentials"] == "false"


def test_the_report_is_posted_once_and_the_next_push_updates_it(
    github: Simulation, worse: tuple[PullRequest, Run], tmp_path: Path
) -> None:
    pull, run = worse
    posted = github.on_workflow_run("pr-comment.yml", run, pull)
    assert posted.jobs == {"comment": "success"}, posted.text()[-3000:]
    assert writes(posted) == [f"POST /repos/{github.repository}/issues/{pull.number}/comments"]
    (comment,) = marked(github, pull.number)
    assert comment["body"] == artifact(github, run)["pr-comment.md"]
    assert comment["user"]["login"] == "github-actions[bot]"

    # A second push to the pull request: its run's report replaces the comment in place
    work = github.clone(tmp_path / "work", pull.branch)
    (work / "README.md").write_text((work / "README.md").read_text() + "\nA reviewer's note.\n")
    git("commit", "-qam", "a second push", cwd=work)
    pushed = github.pull_request(work, pull.branch, pull.number)
    again = github.on_pull_request(pushed, "pr.yml")
    assert again.jobs == {"inputs": "success", "gate": "failure"}
    updated = github.on_workflow_run("pr-comment.yml", again, pushed)
    assert updated.jobs == {"comment": "success"}
    assert writes(updated) == [f"PATCH /repos/{github.repository}/issues/comments/{comment['id']}"]
    assert marked(github, pull.number) == [comment]

    # The first run's report is stale now (its commit is no longer the head): not posted
    stale = github.on_workflow_run("pr-comment.yml", run, pull)
    assert stale.jobs == {"comment": "failure"}
    assert "no open pull request has head commit" in stale.text()
    assert writes(stale) == []


@pytest.fixture(scope="module")
def team_server() -> Iterator[str]:
    """The team's MLflow server (PostgreSQL, S3 artifacts): its address, all a client needs.

    Needs Debian's ``postgresql`` and the optional group ``shared``: outside CI a machine without
    them skips; in CI (``.ci/run`` installs both) their absence fails.
    """
    from tools.services import running

    stack = ExitStack()
    try:
        services = stack.enter_context(running())
    except (PipelineError, ImportError) as error:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"shared services: {error}")
    with stack:
        yield services.tracking_uri


def test_a_seed_only_pull_request_passes_its_check_and_links_its_run_on_the_team_server(
    github: Simulation, team_server: str, tmp_path: Path
) -> None:
    """The repository variable MLFLOW_TRACKING_URI names the team's server: the pull request's
    run is logged there, holding the address only, and the comment links it."""
    from mlflow import MlflowClient

    work = github.clone(tmp_path / "work")
    pull = propose(github, work, "reseed", 12, RESEED)
    run = github.on_pull_request(pull, "pr.yml", variables={"MLFLOW_TRACKING_URI": team_server})
    assert run.jobs == {"inputs": "success", "gate": "success"}, run.text()[-3000:]
    comment = run.summaries["gate"]
    assert comment.startswith("✅ **Gate passed**")
    assert "| train.seed |" in comment
    link = re.compile(
        rf"\[`([0-9a-f]{{32}})`\]\({re.escape(team_server)}/#/experiments/\d+/runs/\1\)"
    )
    (run_id,) = link.findall(comment)
    assert MlflowClient(tracking_uri=team_server).get_run(run_id).info.status == "FINISHED"


def test_a_pull_request_that_changes_no_pipeline_input_skips_the_gate_and_posts_nothing(
    github: Simulation, tmp_path: Path
) -> None:
    work = github.clone(tmp_path / "work")
    git("checkout", "-q", "-B", "docs", "origin/main", cwd=work)
    (work / "README.md").write_text((work / "README.md").read_text() + "\nA clearer sentence.\n")
    git("commit", "-qam", "docs: a clearer sentence", cwd=work)
    pull = github.pull_request(work, "docs", 16)
    run = github.on_pull_request(pull, "pr.yml")
    assert run.outputs["inputs"]["changed"] == "false", run.text()[-3000:]
    # The gate job is skipped, which its required check counts as passed
    assert run.jobs.get("gate", "skipped") == "skipped", run.text()[-3000:]
    assert run.jobs["inputs"] == "success"
    assert run.conclusion == "success"
    posted = github.on_workflow_run("pr-comment.yml", run, pull)
    assert posted.jobs == {"comment": "success"}, posted.text()[-3000:]
    assert "left no report" in posted.text()
    assert writes(posted) == []
    assert marked(github, 16) == []


def test_a_fork_runs_read_only_and_its_artifact_is_checked_before_posting(
    github: Simulation, tmp_path: Path
) -> None:
    work = github.clone(tmp_path / "work")
    pull = propose(github, work, "patch-1", 13, RESEED, fork=True)
    run = github.on_pull_request(pull, "pr.yml")
    assert run.jobs == {"inputs": "success", "gate": "success"}, run.text()[-3000:]
    assert {c.token for c in run.calls} == {"read"}  # the token it was given, used by checkout
    assert writes(run) == []

    posted = github.on_workflow_run("pr-comment.yml", run, pull)
    assert posted.jobs == {"comment": "success"}, posted.text()[-3000:]
    assert len(marked(github, 13)) == 1  # found by its head commit: a fork's run names no PR

    body = artifact(github, run)["pr-comment.md"]
    tampered = {
        "names pull request #11, but commit": {"pr-number.txt": "11\n", "pr-comment.md": body},
        "larger than 240,000 bytes": {
            "pr-number.txt": "13\n",
            "pr-comment.md": MARKER + "x" * 300_000,
        },
        "must be a positive integer": {"pr-number.txt": "13; rm -rf /\n", "pr-comment.md": body},
        "lacks the marker": {"pr-number.txt": "13\n", "pr-comment.md": "## Looks fine\n"},
        "missing or not a regular file": {"pr-comment.md": body},
    }
    for message, files in tampered.items():
        fake = github.uploaded(
            "pr.yml", pull.head_sha, "pr-comment", {k: v.encode() for k, v in files.items()}
        )
        refused = github.on_workflow_run("pr-comment.yml", fake, pull)
        assert refused.jobs == {"comment": "failure"}, message
        assert message in refused.text(), refused.text()[-2000:]
        assert writes(refused) == [], message
    assert len(marked(github, 13)) == 1


def test_template_update_is_a_no_op_here_and_needs_its_token_in_a_model_repository(
    github: Simulation, tmp_path: Path
) -> None:
    here = github.on_dispatch("template-update.yml")
    assert here.jobs == {"update": "success"}, here.text()[-2000:]
    assert "this repository is the template itself, nothing to update" in here.text()
    assert not any(r["action"] == "setup-uv" for r in here.records)  # later steps skipped

    work = github.clone(tmp_path / "work")
    git("checkout", "-q", "-b", "generated", cwd=work)
    (work / ".copier-answers.yml").write_text("_commit: v1\n_src_path: /nowhere\n")
    git("add", ".copier-answers.yml", cwd=work)
    git("commit", "-qm", "as made by make new-model", cwd=work)
    github.push_branch(work, "generated")
    missing = github.on_dispatch("template-update.yml", branch="generated")
    assert missing.jobs == {"update": "failure"}
    assert "::error::set the secret TEMPLATE_UPDATE_TOKEN" in missing.text()
    assert github.api.writes() == [c for c in github.api.writes() if "comments" in c.path]


@pytest.fixture
def main_restored(github: Simulation) -> Iterator[str]:
    """main's commit; after the test, main is put back there and deploy/staging is removed."""
    before = github.sha("refs/heads/main")
    yield before
    git("update-ref", "refs/heads/main", before, cwd=github.origin)
    git("update-ref", "-d", f"refs/heads/{STAGING}", cwd=github.origin)


def staged(github: Simulation, ref: str = STAGING) -> str:
    """The image the staging overlay names at ``ref`` of the origin."""
    return str(manifests.read_image(git("show", f"{ref}:{OVERLAY}", cwd=github.origin)))


def test_a_stale_lock_on_main_stops_the_release_before_anything_is_built(
    github: Simulation, main_restored: str, tmp_path: Path
) -> None:
    work = github.clone(tmp_path / "work")
    edit_params(work, {r"^  calibration_bins: [0-9]+": "  calibration_bins: 12"})  # no dvc.lock
    git("commit", "-qam", "a params change merged without its dvc.lock", cwd=work)
    pushed = github.push_branch(work, "main")
    run = github.on_push("release.yml", main_restored)
    assert run.jobs.get("lock") == "failure", run.text()[-3000:]
    assert run.jobs.get("image") != "success"
    assert "dvc.lock" in run.text()
    assert {r["action"] for r in run.records} <= {"checkout", "setup-uv"}  # no login, no attest
    assert github.sha("refs/heads/main") == pushed  # nothing pushed to main


@dataclass(frozen=True)
class Remote:
    """An S3-compatible DVC remote on 127.0.0.1 (SeaweedFS), and its keys as the secrets."""

    endpoint: str
    url: str
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def s3_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """SeaweedFS's S3 server with one bucket and one identity, which checks the keys.

    Needs the optional group ``shared`` (DVC's S3 support, SeaweedFS): outside CI a machine
    without it skips; in CI (``.ci/run`` installs it) its absence fails.
    """
    from tools import services

    key, secret = "release", "release-secret-key"
    with ExitStack() as stack:
        try:
            import dvc_s3  # noqa: F401  (DVC's S3 support, which the jobs need too)

            endpoint = services.start_seaweedfs(
                stack, {}, tmp_path_factory.mktemp("s3"), key, secret
            )
        except (PipelineError, ImportError) as error:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(f"S3 remote: {error}")
        keys = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        yield Remote(endpoint, f"s3://{services.BUCKET}/dvc", keys)


def test_a_release_shares_mains_outputs_and_a_fresh_runner_then_trains_nothing(
    github: Simulation,
    trained_repo: ScratchRepo,
    s3_remote: Remote,
    main_restored: str,
    tmp_path: Path,
) -> None:
    """release.yml's lock job, twice, with the team's DVC remote committed on main: the first
    pushes main's outputs (restored from the session's trained copy, as a shared cache holds
    them); the second runs on a runner with no cache at all and takes everything from the
    remote, so `dvc repro` runs no stage that trains. Register and card run, by design: they
    name the job's own MLflow run, and are not shared."""
    shutil.copytree(
        trained_repo.path / ".dvc" / "cache", github.root / "dvc-cache", dirs_exist_ok=True
    )
    work = github.clone(tmp_path / "work")
    dvc = [sys.executable, "-m", "dvc", "remote"]
    for args in (
        ["add", "-d", "team", s3_remote.url],
        ["modify", "team", "endpointurl", s3_remote.endpoint],
        ["modify", "team", "region", "us-east-1"],
    ):
        subprocess.run([*dvc, *args], cwd=work, check=True, capture_output=True)
    git("commit", "-qam", "Add the team's DVC remote", cwd=work)
    github.push_branch(work, "main")
    stages = list(yaml.safe_load((work / "dvc.yaml").read_text())["stages"])
    shared = [s for s in stages if s not in NAMING_A_RUN]

    first = github.on_push("release.yml", main_restored, job="lock", secrets=s3_remote.secrets)
    assert first.jobs == {"lock": "success"}, first.text()[-4000:]
    log = first.text()
    assert "dvc.lock matches what the code and data reproduce" in log
    pushed = re.search(r"pushed to DVC remote 'team': (\d+) new files \((.*?)\)", log)
    assert pushed, log[-4000:]
    assert int(pushed[1]) > 0
    assert set(pushed[2].split(", ")) == {"data.dvc", *shared}

    # A runner with no DVC cache (its own config folder: not the simulation's shared cache)
    bare = {"XDG_CONFIG_HOME": str(tmp_path / "fresh-runner")}
    second = github.on_push(
        "release.yml", main_restored, job="lock", secrets=s3_remote.secrets, env=bare
    )
    assert second.jobs == {"lock": "success"}, second.text()[-4000:]
    log = second.text()
    assert "pulling data.dvc from DVC remote 'team'" in log
    assert re.search(r"pulled from DVC remote 'team': \d+ files fetched", log), log[-4000:]
    for stage in shared:
        assert f"Stage '{stage}' didn't change, skipping" in log, stage
        assert f"Running stage '{stage}'" not in log, stage
    assert {s for s in stages if f"Running stage '{s}'" in log} == NAMING_A_RUN
    assert "pushed to DVC remote 'team': 0 new files" in log  # it was all there already


def test_promote_opens_one_pull_request_moving_production_to_staging(
    github: Simulation, main_restored: str, tmp_path: Path
) -> None:
    digest = "sha256:" + "5" * 64
    staging = f"registry.example/team/model@{digest}"
    work = github.clone(tmp_path / "work")
    manifests.set_image(work / OVERLAY, manifests.parse_reference(staging))
    git("commit", "-qam", "staging runs a new image", cwd=work)
    github.push_branch(work, STAGING)  # where the release writes it, and Argo CD reads it

    # Without its token it stops before any work: the workflow's own would open a pull request
    # whose checks never run
    refused = github.on_dispatch("promote.yml")
    assert refused.jobs == {"promote": "failure"}
    assert "::error::set the secret PROMOTE_TOKEN" in refused.text()
    assert not any(r["action"] == "checkout" for r in refused.records)
    assert writes(refused) == []

    token = {"PROMOTE_TOKEN": WRITE_TOKEN}
    run = github.on_dispatch("promote.yml", secrets=token)
    assert run.jobs == {"promote": "success"}, run.text()[-3000:]
    (opened,) = [r for r in run.records if r["action"] == "create-pull-request"]
    assert opened["inputs"]["token"] == "***"  # noqa: S105 (PROMOTE_TOKEN, masked)
    (created,) = [c for c in run.calls if c.method == "POST"]
    assert created.path == f"/repos/{github.repository}/pulls"
    assert created.body["head"] == "promote/production"
    assert staging in created.body["title"]
    changed = git("diff", "--name-only", "main", "promote/production", cwd=github.origin)
    assert changed == "deploy/overlays/production/kustomization.yaml"
    production = git("show", "promote/production:" + changed, cwd=github.origin)
    assert str(manifests.read_image(production)) == staging

    # Dispatched again with a shadow report: the same pull request, which now shows it
    report = "## Shadow scoring: the challenger against the model\n\n| a | b |\n|---|---|\n"
    again = github.on_dispatch("promote.yml", {"shadow_report": report}, secrets=token)
    assert again.jobs == {"promote": "success"}
    (updated,) = [c for c in again.calls if c.method != "GET"]
    assert updated.method == "PATCH"  # the same PR
    assert report.strip() in updated.body["body"]
    promotions = [p for p in github.api.pulls.values() if p["head"]["ref"] == "promote/production"]
    assert len(promotions) == 1


def test_staging_moves_on_its_branch_and_a_direct_push_to_the_protected_main_is_refused(
    github: Simulation, main_restored: str, tmp_path: Path
) -> None:
    image = f"registry.example/team/model@sha256:{'6' * 64}"
    # By hand, an image already pushed: deploy/staging is made from main, plus the image
    run = github.on_dispatch("staging.yml", {"image": image})
    assert run.jobs == {"staging": "success"}, run.text()[-3000:]
    assert github.sha("refs/heads/main") == main_restored
    assert git("rev-parse", f"{STAGING}~1", cwd=github.origin) == main_restored
    assert staged(github) == image
    deployed = github.sha(f"refs/heads/{STAGING}")

    # A merge that changes deploy/ reaches staging, which keeps running its image
    work = github.clone(tmp_path / "work")
    deployment = work / "deploy" / "base" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 3")
    )
    git("commit", "-qam", "Keep three old ReplicaSets", cwd=work)
    merged = github.push_branch(work, "main")
    carried = github.on_push("staging.yml", main_restored)
    assert carried.jobs == {"staging": "success"}, carried.text()[-3000:]
    parents = git("log", "-1", "--format=%P", STAGING, cwd=github.origin).split()
    assert parents == [deployed, merged]
    assert staged(github) == image
    base = git("show", f"{STAGING}:deploy/base/deployment.yaml", cwd=github.origin)
    assert "revisionHistoryLimit: 3" in base

    # Staging's Application watching main instead: the image would be pushed to main, which
    # the ruleset refuses; the job fails saying so and what to do, and nothing moves
    application = work / "deploy" / "argocd" / "staging.yaml"
    text = application.read_text()
    application.write_text(text.replace(f"targetRevision: {STAGING}", "targetRevision: main"))
    git("commit", "-qam", "Staging follows main", cwd=work)
    direct = github.push_branch(work, "main")
    refused = github.on_dispatch("staging.yml", {"image": image})
    assert refused.jobs == {"staging": "failure"}, refused.text()[-3000:]
    assert "GH013: Repository rule violations found for refs/heads/main." in refused.text()
    assert "targetRevision: deploy/staging" in refused.text()
    assert github.sha("refs/heads/main") == direct
    # ... and without the ruleset, one commit on main's tip changing the overlay only
    with github.unprotected():
        pushed = github.on_dispatch("staging.yml", {"image": image})
    assert pushed.jobs == {"staging": "success"}, pushed.text()[-3000:]
    assert git("rev-parse", "main~1", cwd=github.origin) == direct
    assert git("diff", "--name-only", direct, "main", cwd=github.origin) == OVERLAY
    assert staged(github, "main") == image


@dataclass(frozen=True)
class Production:
    """Served rows with late labels for monitor.yml: folders of drifted and of undrifted rows."""

    drifted: dict[str, str]
    steady: dict[str, str]
    branch: str
    data_dvc: str


@pytest.fixture(scope="module")
def production(
    github: Simulation, trained_repo: ScratchRepo, tmp_path_factory: pytest.TempPathFactory
) -> Production:
    """Drifted and steady served rows, from the table's own rows under new ids, with labels.

    main's model and data go into the DVC cache the jobs share (as a DVC remote holds what main
    trained), so the monitor job restores them instead of training.
    """
    shutil.copytree(
        trained_repo.path / ".dvc" / "cache", github.root / "dvc-cache", dirs_exist_ok=True
    )
    params = trained_repo.path / "params.yaml"
    paths = load_paths(params)
    schema = load_schema(trained_repo.path / paths.schema_)
    raw = read_raw(trained_repo.path / paths.raw)
    size = min(2 * load_section("monitor", MonitorParams, params).min_rows, len(raw) // 3)
    shifted = pick(schema, "integer", "number") or next(iter(schema.features))
    # Drift: the rows with the highest values of one feature; no drift: a random sample
    drifted = raw.sort_values(shifted, kind="stable").tail(size)
    steady = raw.sample(size, random_state=1)
    variables = {}
    for name, chosen in (("drifted", drifted), ("steady", steady)):
        rows = chosen.assign(**{schema.id: new_ids(raw[schema.id], size)})
        folder = tmp_path_factory.mktemp(name)
        (folder / "rows").mkdir()
        rows.drop(columns=[schema.target.column]).to_csv(
            folder / "rows" / "served.csv", index=False
        )
        labels = rows[[schema.id, schema.target.column]]
        labels.columns = ["id", "label"]
        labels.to_csv(folder / "labels.csv", index=False)
        variables[name] = {
            "MONITOR_ROWS": str(folder / "rows"),
            "MONITOR_LABELS": str(folder / "labels.csv"),
        }
    model = load_section("register", RegisterParams, params).model_name
    return Production(
        variables["drifted"], variables["steady"], f"retrain/{model}", str(paths.data_dvc)
    )


def monitor(github: Simulation, variables: dict[str, str], token: bool = True) -> Run:
    secrets = {"RETRAIN_TOKEN": WRITE_TOKEN} if token else {}
    return github.on_dispatch("monitor.yml", secrets=secrets, variables=variables)


def test_monitor_needs_its_token(github: Simulation, production: Production) -> None:
    run = monitor(github, production.drifted, token=False)
    assert run.jobs == {"monitor": "failure"}
    assert "::error::set the secret RETRAIN_TOKEN" in run.text()
    assert writes(run) == []
    assert not any(r["action"] == "checkout" for r in run.records)  # stopped before any work


def test_drift_opens_one_retraining_pull_request_and_updates_it(
    github: Simulation, production: Production
) -> None:
    run = monitor(github, production.drifted)
    assert run.jobs == {"monitor": "success"}, run.text()[-4000:]
    (created,) = [c for c in run.calls if c.method == "POST"]
    assert created.path == f"/repos/{github.repository}/pulls"
    assert created.body["head"] == production.branch
    assert created.body["title"].startswith("Retrain ")
    body = created.body["body"]
    assert body.startswith("🔴 **Drift**"), body[:500]
    assert body.strip() in run.summaries["monitor"]  # the report make monitor wrote
    assert "Training data refreshed" in run.summaries["monitor"]
    print(f"\n--- the retraining pull request's body ---\n{body}\n---")
    changed = git("diff", "--name-only", "main", production.branch, cwd=github.origin)
    assert changed == production.data_dvc
    (record,) = [r for r in run.records if r["action"] == "create-pull-request"]
    assert record["inputs"]["token"] == "***"  # noqa: S105 (masked by the stand-in)
    assert record["inputs"]["body-path"] == "reports/monitor.md"

    again = monitor(github, production.drifted)
    assert again.jobs == {"monitor": "success"}, again.text()[-4000:]
    patched = [c for c in again.calls if c.method != "GET"]
    assert [c.method for c in patched] == ["PATCH"]  # the same pull request, updated
    retraining = [p for p in github.api.pulls.values() if p["head"]["ref"] == production.branch]
    assert len(retraining) == 1
    assert retraining[0]["body"].startswith("🔴 **Drift**")


def test_no_drift_proposes_nothing_and_leaves_the_open_pull_request(
    github: Simulation, production: Production
) -> None:
    before = copy.deepcopy([p for p in github.api.pulls.values()])
    head = github.sha(f"refs/heads/{production.branch}")  # opened by the drift scenario
    run = monitor(github, production.steady)
    assert run.jobs == {"monitor": "success"}, run.text()[-4000:]
    assert "retrain=false" in run.text()
    assert writes(run) == []
    assert not any(r["action"] == "create-pull-request" for r in run.records)
    assert list(github.api.pulls.values()) == before
    assert github.sha(f"refs/heads/{production.branch}") == head


def tune(github: Simulation, trials: str, token: bool = True) -> Run:
    secrets = {"RETRAIN_TOKEN": WRITE_TOKEN} if token else {}
    return github.on_dispatch("tune.yml", {"trials": trials}, secrets=secrets)


def test_tune_needs_its_token_and_a_whole_number_of_trials(github: Simulation) -> None:
    for trials, token, says in (
        ("3", False, "::error::set the secret RETRAIN_TOKEN"),
        ("0", True, "::error::the input trials must be a whole number above 0, not '0'"),
        ("3; rm -rf /", True, "must be a whole number above 0"),
    ):
        run = tune(github, trials, token)
        assert run.jobs == {"tune": "failure"}, trials
        assert says in run.text(), run.text()[-2000:]
        assert writes(run) == []
        assert not any(r["action"] == "checkout" for r in run.records)  # before any work


def test_tuning_opens_one_pull_request_with_the_params_and_updates_it(
    github: Simulation, main_restored: str, tmp_path: Path
) -> None:
    """main's params are weak (5 stumps): a short search beats them and proposes the change;
    a second run updates the same pull request. (A search that beats nothing proposes nothing:
    tests/tuning/test_proposal.py, without a third search here.)"""
    work = github.clone(tmp_path / "work")
    edit_params(work, WORSE)
    git("commit", "-qam", "weak params on main", cwd=work)
    weak = github.push_branch(work, "main")

    run = tune(github, "3")
    assert run.jobs == {"tune": "success"}, run.text()[-4000:]
    (created,) = [c for c in run.calls if c.method == "POST"]
    assert created.path == f"/repos/{github.repository}/pulls"
    assert created.body["head"] == "tune/params"
    assert created.body["base"] == "main"
    assert created.body["title"].startswith("Tune ")
    body = created.body["body"]
    assert body.startswith("## Tuning: ")
    assert body == run.summaries["tune"]  # reports/tune.md, as make tune wrote it
    assert "beats the current params" in body
    assert git("rev-parse", "tune/params~1", cwd=github.origin) == weak
    assert git("diff", "--name-only", "main", "tune/params", cwd=github.origin) == "params.yaml"
    tuned = yaml.safe_load(git("show", "tune/params:params.yaml", cwd=github.origin))
    assert (
        tuned["train"]["xgboost"]
        != yaml.safe_load((work / "params.yaml").read_text())["train"]["xgboost"]
    )
    (record,) = [r for r in run.records if r["action"] == "create-pull-request"]
    assert record["inputs"]["token"] == "***"  # noqa: S105 (masked by the stand-in)
    assert record["inputs"]["add-paths"] == "params.yaml"

    again = tune(github, "3")
    assert again.jobs == {"tune": "success"}, again.text()[-4000:]
    assert [c.method for c in again.calls if c.method != "GET"] == ["PATCH"]  # the same PR
    tuning = [p for p in github.api.pulls.values() if p["head"]["ref"] == "tune/params"]
    assert len(tuning) == 1
    assert tuning[0]["body"] == again.summaries["tune"]


def test_ci_passes(github: Simulation) -> None:
    """ci.yml on a push to main. Its test job runs one test module: the rest of `make test` is
    this suite, which would run this scenario again."""
    main = github.sha("refs/heads/main")
    run = github.on_push("ci.yml", main, env={"PYTEST_ARGS": "tests/test_params.py"})
    assert run.jobs == {"lint": "success", "test": "success"}, run.text()[-4000:]


@dataclass(frozen=True)
class Images:
    """Where release.yml pushes (a registry on 127.0.0.1), and the run that serves its images."""

    registry: str
    run: containers.Run


@pytest.fixture(scope="module")
def images(
    github: Simulation, trained_repo: ScratchRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Images]:
    """A registry on 127.0.0.1 and Podman's Docker API for release.yml's image job.

    The tools come from apt (root, Debian); CI fails without them. The reference model is the
    session's trained copy, whose model is the one main releases.
    """
    root = tmp_path_factory.mktemp("images")
    try:
        with simulation.images(github, root, trained_repo.path) as (registry, run):
            yield Images(registry, run)
    except PipelineError as error:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(error))


def tags(address: str, repository: str) -> list[str]:
    url = f"http://{address}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url) as answer:
        return sorted(json.loads(answer.read())["tags"] or [])


def test_a_merge_releases_one_image_and_points_staging_at_it_once(
    github: Simulation, images: Images, main_restored: str, tmp_path: Path
) -> None:
    registry, run = images.registry, images.run
    # A merged pull request that changes the bento (release.yml's paths), not the model
    work = github.clone(tmp_path / "work")
    git("checkout", "-q", "-b", "describe", cwd=work)
    bentofile = work / "bentofile.yaml"
    text = bentofile.read_text()
    bentofile.write_text(re.sub(r'(?m)^description: ".*"$', 'description: "Released."', text))
    git("commit", "-qam", "Describe the bento", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    git(
        "merge", "-q", "--no-ff", "-m", "Merge pull request #14 from describe", "describe", cwd=work
    )
    merged = github.push_branch(work, "main")

    released = github.on_push("release.yml", main_restored)
    jobs = {"lock": "success", "image": "success", "staging": "success", "alias": "success"}
    assert released.jobs == jobs, released.text()[-5000:]
    reference = released.outputs["image"]["digest_ref"]
    repository = reference.split("@")[0].split("/", 1)[1]
    assert reference.startswith(f"{registry}/{github.repository}@sha256:")
    (tag,) = tags(registry, repository)
    assert merged.startswith(tag.rsplit("-", 1)[1])  # <bento version>-<short commit>
    # main is protected and untouched; deploy/staging is made from the merge, plus one commit
    # changing only the staging overlay to the digest
    assert github.sha("refs/heads/main") == merged
    assert git("rev-parse", f"{STAGING}~1", cwd=github.origin) == merged
    assert git("diff", "--name-only", merged, STAGING, cwd=github.origin) == OVERLAY
    assert staged(github) == reference
    assert f"staging runs {reference}: {STAGING} created at " in released.text()
    actions = {r["action"]: r for r in released.records}
    assert actions["login-action"]["inputs"]["registry"] == registry
    assert actions["attest-build-provenance"]["subject"] == reference
    card = artifact(github, released, "model-card")["card.md"]
    assert card.startswith("---\n")
    assert "model-index:" in card
    head = github.sha(f"refs/heads/{STAGING}")

    # What staging now runs, pulled by digest into a store of its own and run locked down as
    # the Deployment runs it, answers /predict as the model does
    with ExitStack() as stack:
        run.run("podman", "pull", "--quiet", "--tls-verify=false", reference, env=run.podman)
        image_e2e.serve(run, stack, reference, run.podman)
    # ... and carries no compiler, git or GPU package, under its size target
    image_e2e.check_lean(run, reference, run.podman)

    # Its lineage, read back from the image's labels and git at its commit (`make trace`)
    path = f"{Path(sys.executable).parent}{os.pathsep}{simulation.SYSTEM_PATH}"
    traced = subprocess.run(
        [sys.executable, "-m", "pipelines.release.trace", reference],
        cwd=work,
        env=github.host_env() | {"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert f"- Commit: {merged}" in traced.stdout, traced.stdout
    data = yaml.safe_load(git("show", f"{merged}:data.dvc", cwd=work))["outs"][0]["md5"]
    assert f"- Data hash: {data} (data.dvc at the commit: {data})" in traced.stdout
    # The merge gated against main before it: the same model, so nothing regressed
    assert f"- Gate verdict of the merge: pass against {main_restored}, paired: " in traced.stdout
    # The registry alias followed the release: without a tracking server (the repository variable
    # MLFLOW_TRACKING_URI), the version the image serves is named and nothing is set
    (model_uri,) = re.findall(r"(?m)^- MLflow model: (models:/\S+/\d+)$", traced.stdout)
    no_server = "no tracking server configured (MLFLOW_TRACKING_URI): {} not set on {}, whose"
    assert no_server.format("staging", model_uri) in released.text()

    # The same push again: the tag exists, so nothing is built or pushed, and staging already
    # runs that digest, so nothing is committed
    again = github.on_push("release.yml", main_restored, after=merged)
    assert again.jobs == jobs, again.text()[-5000:]
    assert again.outputs["image"]["digest_ref"] == reference
    assert f"building {registry}/" not in again.text()
    assert "is already in its registry" in again.text()
    assert tags(registry, repository) == [tag]
    assert github.sha(f"refs/heads/{STAGING}") == head
    assert github.sha("refs/heads/main") == merged
    assert f"staging already runs {reference} ({STAGING} at {head[:12]})" in again.text()

    # A promotion's merge puts the image in production: the production alias follows, to the
    # version the image's label names, read from the registry
    production = work / "deploy" / "overlays" / "production" / "kustomization.yaml"
    manifests.set_image(production, manifests.parse_reference(reference))
    git("commit", "-qam", "Merge pull request #15 from promote/production", cwd=work)
    promoted = github.on_push("promote.yml", merged, after=github.push_branch(work, "main"))
    assert promoted.jobs.get("alias") == "success", promoted.text()[-5000:]
    assert promoted.jobs.get("promote", "skipped") == "skipped"
    assert no_server.format("production", model_uri) in promoted.text()
    assert writes(promoted) == []
