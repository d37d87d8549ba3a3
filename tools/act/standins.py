"""What the stand-in actions do, run by their ``action.yml`` inside a job that act runs.

Standard library only, run as ``python3 $ACT_STANDINS <action>``, because a job has no project
environment before setup-uv. Each stand-in checks the inputs the workflow gives it (as the real
action would refuse them), does the part the workflow relies on against the simulated GitHub,
records its inputs in ``$ACT_RECORD`` (one JSON line; secrets masked) and writes its outputs.

The simulation (:mod:`tools.act.simulation`) sets: ``ACT_ORIGIN`` (the bare origin),
``ACT_ARTIFACTS`` (uploaded artifacts, ``<run id>/<name>.zip``), ``ACT_RECORD``, ``ACT_UV`` (the
locked uv) and ``ACT_UV_ENVIRONMENT`` (the Python environment the jobs share), and points
``GITHUB_API_URL`` at the API stand-in. Inputs arrive as ``INPUT_<NAME>`` variables.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# pipelines.release.reference.DIGEST, written out: this file runs before the project environment
# exists (tests/test_architecture.py keeps the two equal)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SECRET_INPUTS = {"password", "token", "github-token"}
MAX_ZIP_BYTES = 50_000_000


class StandInError(Exception):
    """An input or a state the real action would refuse: the step fails with this message."""


def inputs(*names: str) -> dict[str, str]:
    """The step's inputs, as the action.yml passed them."""
    return {n: os.environ.get("INPUT_" + n.upper().replace("-", "_"), "").strip() for n in names}


def boolean(name: str, value: str) -> bool:
    """An input that must be ``true`` or ``false``."""
    if value not in {"true", "false"}:
        raise StandInError(f"input {name} must be true or false, got {value!r}")
    return value == "true"


def record(action: str, given: dict[str, str], **extra: Any) -> None:
    """Append what this stand-in was given to the run's record, secrets masked."""
    shown = {k: ("***" if k in SECRET_INPUTS and v else v) for k, v in given.items()}
    line = {
        "action": action,
        "workflow": os.environ.get("GITHUB_WORKFLOW"),
        "job": os.environ.get("GITHUB_JOB"),
        "run_id": os.environ.get("GITHUB_RUN_ID"),
        "inputs": shown,
        **extra,
    }
    with Path(os.environ["ACT_RECORD"]).open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def output(**values: str) -> None:
    """Write step outputs."""
    with Path(os.environ["GITHUB_OUTPUT"]).open("a") as handle:
        for key, value in values.items():
            handle.write(f"{key}={value}\n")


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git; a failure becomes a StandInError with git's message."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StandInError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def workspace() -> Path:
    """The job's workspace."""
    return Path(os.environ["GITHUB_WORKSPACE"])


# --- actions/checkout ---------------------------------------------------------------------------


def checkout() -> None:
    """Clone the local origin into the workspace at the event's commit, as actions/checkout does.

    ``fetch-depth: 0`` fetches every branch and tag (``origin/<base>`` then exists); otherwise only
    the commit, that deep. Branch events get the branch checked out, others a detached HEAD.
    """
    given = inputs(
        "repository",
        "ref",
        "token",
        "fetch-depth",
        "persist-credentials",
        "sparse-checkout",
        "sparse-checkout-cone-mode",
    )
    repository = os.environ["GITHUB_REPOSITORY"]
    if given["repository"] not in {"", repository}:
        raise StandInError(f"the stand-in checks out {repository} only, not {given['repository']}")
    if not re.fullmatch(r"[0-9]+", given["fetch-depth"] or "1"):
        raise StandInError(f"fetch-depth must be a whole number, got {given['fetch-depth']!r}")
    depth = int(given["fetch-depth"] or "1")
    persist = boolean("persist-credentials", given["persist-credentials"] or "true")
    cone = boolean("sparse-checkout-cone-mode", given["sparse-checkout-cone-mode"] or "true")
    sparse = given["sparse-checkout"].split()
    ref = given["ref"] or os.environ["GITHUB_REF"]
    sha = os.environ["GITHUB_SHA"] if not given["ref"] else ""
    record("checkout", given)
    # As actions/checkout does, ask the API about the repository with the token it was given:
    # the API stand-in records which kind of token that was.
    if given["token"]:
        _api(f"/repos/{repository}", given["token"])

    here = workspace()
    git("init", "-q", cwd=here)
    git("remote", "add", "origin", f"file://{os.environ['ACT_ORIGIN']}", cwd=here)
    if sparse:
        git("sparse-checkout", "set", *(["--no-cone"] if not cone else []), *sparse, cwd=here)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    target = f"refs/remotes/origin/{branch}" if branch else "refs/remotes/checkout/target"
    if depth == 0:
        git("fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=here)
        git("fetch", "-q", "origin", f"+{sha or ref}:{target}", cwd=here)
    else:
        git("fetch", "-q", f"--depth={depth}", "origin", f"+{sha or ref}:{target}", cwd=here)
    if branch:
        git("checkout", "-q", "-B", branch, target, cwd=here)
        git("branch", "-q", f"--set-upstream-to=origin/{branch}", cwd=here)
    else:
        git("checkout", "-q", "--detach", target, cwd=here)
    if persist:
        # As checkout@v6: the token lives in a file outside .git/config, included from it.
        credentials = Path(os.environ["RUNNER_TEMP"]) / f"git-credentials-{os.getpid()}.config"
        token = base64.b64encode(f"x-access-token:{given['token']}".encode()).decode()
        server = os.environ["GITHUB_SERVER_URL"]
        credentials.write_text(
            f'[http "{server}/"]\n\textraheader = AUTHORIZATION: basic {token}\n'
        )
        git("config", "--local", "include.path", str(credentials), cwd=here)
    print(f"checked out {ref} at {git('rev-parse', 'HEAD', cwd=here)} (depth {depth or 'all'})")


# --- astral-sh/setup-uv -------------------------------------------------------------------------


def setup_uv() -> None:
    """Put the locked uv on PATH, and hand the jobs the environment they share."""
    given = inputs("enable-cache", "version", "python-version")
    if given["enable-cache"] not in {"", "true", "false", "auto"}:
        raise StandInError(f"enable-cache must be true, false or auto: {given['enable-cache']!r}")
    if given["version"] or given["python-version"]:
        raise StandInError("the stand-in gives the locked uv and Python: drop version inputs")
    uv = Path(os.environ["ACT_UV"])
    version = subprocess.run(
        [str(uv), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    record("setup-uv", given, uv=version)
    with Path(os.environ["GITHUB_PATH"]).open("a") as handle:
        handle.write(f"{uv.parent}\n")
    environment = os.environ.get("ACT_UV_ENVIRONMENT")
    if environment:
        # One environment for every job, checked against uv.lock and never changed (see
        # CHECK_ENV in the Makefile), instead of one installed per job.
        with Path(os.environ["GITHUB_ENV"]).open("a") as handle:
            handle.write(f"UV_PROJECT_ENVIRONMENT={environment}\nCHECK_ENV=1\nUV_NO_SYNC=1\n")
    output(**{"uv-version": version, "uv-path": str(uv), "cache-hit": "false"})


# --- actions/upload-artifact and download-artifact ---------------------------------------------


def _matched(patterns: list[str], root: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in (p for p in patterns if not p.startswith("!")):
        matches = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else []
        candidate = root / pattern
        for match in matches or ([candidate] if candidate.exists() else []):
            found = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
            files.update(found)
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    return sorted(
        f for f in files if not any(fnmatch.fnmatch(str(f.relative_to(root)), e) for e in excluded)
    )


def upload_artifact() -> None:
    """Zip the matched files, relative to their common folder, as upload-artifact v4+ does."""
    given = inputs("name", "path", "if-no-files-found", "retention-days", "overwrite")
    name = given["name"] or "artifact"
    if not re.fullmatch(r'[^"<>:|*?\\/\r\n]+', name):
        raise StandInError(f"artifact name {name!r} has a character GitHub refuses")
    if given["if-no-files-found"] not in {"", "warn", "error", "ignore"}:
        raise StandInError(f"if-no-files-found must be warn, error or ignore: {given!r}")
    days = given["retention-days"]
    if days and not (days.isdigit() and 1 <= int(days) <= 90):
        raise StandInError(f"retention-days must be 1 to 90, got {days!r}")
    patterns = [line.strip() for line in given["path"].splitlines() if line.strip()]
    if not patterns:
        raise StandInError("input path is required")
    record("upload-artifact", given)
    files = _matched(patterns, workspace())
    if not files:
        message = f"no files were found with the provided path: {given['path']}"
        if given["if-no-files-found"] == "error":
            raise StandInError(message)
        print(f"::warning::{message}. No artifacts will be uploaded.")
        return
    common = Path(os.path.commonpath([f.parent for f in files]))
    target = Path(os.environ["ACT_ARTIFACTS"]) / os.environ["GITHUB_RUN_ID"] / f"{name}.zip"
    if target.exists() and given["overwrite"] != "true":
        raise StandInError(f"an artifact named {name} already exists in this run")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, f.relative_to(common))
    print(f"uploaded {len(files)} file(s) as artifact {name} ({target.stat().st_size} bytes)")
    output(**{"artifact-id": name, "artifact-url": f"file://{target}"})


def _call(method: str, path: str, token: str, body: Any = None) -> bytes:
    """One request to the API stand-in (at most ``MAX_ZIP_BYTES`` read); HTTP errors refuse."""
    url = os.environ["GITHUB_API_URL"].rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback API)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/vnd.github+json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return bytes(response.read(MAX_ZIP_BYTES + 1))
    except urllib.error.HTTPError as error:
        raise StandInError(
            f"{method} {path} got HTTP {error.code}: {error.read()[:300]!r}"
        ) from None


def _api(path: str, token: str) -> bytes:
    return _call("GET", path, token)


def download_artifact() -> None:
    """Download a named artifact of another run through the API (or of this run) into path."""
    given = inputs("name", "path", "run-id", "github-token", "repository")
    if not given["name"]:
        raise StandInError("the stand-in downloads one named artifact: give name")
    if given["run-id"] and not given["github-token"]:
        raise StandInError("github-token is required to download from another run (run-id)")
    if given["run-id"] and not given["run-id"].isdigit():
        raise StandInError(f"run-id must be a number, got {given['run-id']!r}")
    record("download-artifact", given)
    repository = given["repository"] or os.environ["GITHUB_REPOSITORY"]
    if given["run-id"]:
        query = f"/repos/{repository}/actions/runs/{given['run-id']}/artifacts?name={given['name']}"
        listed = json.loads(_api(query, given["github-token"]))["artifacts"]
        if not listed:
            raise StandInError(f"artifact {given['name']} not found in run {given['run-id']}")
        data = _api(
            f"/repos/{repository}/actions/artifacts/{listed[0]['id']}/zip", given["github-token"]
        )
        if len(data) > MAX_ZIP_BYTES:
            raise StandInError(f"artifact {given['name']} is over {MAX_ZIP_BYTES} bytes")
        archive = Path(os.environ["RUNNER_TEMP"]) / f"{given['name']}.zip"
        archive.write_bytes(data)
    else:
        archive = (
            Path(os.environ["ACT_ARTIFACTS"]) / os.environ["GITHUB_RUN_ID"] / f"{given['name']}.zip"
        )
    into = Path(given["path"] or workspace()).resolve()
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as opened:
        for member in opened.namelist():
            if not (into / member).resolve().is_relative_to(into):
                raise StandInError(f"artifact entry {member!r} points outside {into}")
        opened.extractall(into)
    print(f"downloaded artifact {given['name']} into {into}")
    output(**{"download-path": str(into)})


# --- docker/login-action ------------------------------------------------------------------------


def login() -> None:
    """Store the registry credentials where docker, skopeo and podman read them."""
    given = inputs("registry", "username", "password", "logout")
    if not given["username"] or not given["password"]:
        raise StandInError("Username and password required")
    registry = given["registry"] or "docker.io"
    record("login-action", given)
    config = Path.home() / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    document = json.loads(config.read_text()) if config.exists() else {}
    secret = base64.b64encode(f"{given['username']}:{given['password']}".encode()).decode()
    document.setdefault("auths", {})[registry] = {"auth": secret}
    config.write_text(json.dumps(document, indent=2))
    config.chmod(0o600)
    print(f"Login Succeeded ({registry})")


# --- actions/attest-build-provenance ------------------------------------------------------------


def attest() -> None:
    """Check the subject (an image by digest that the registry holds) and record it."""
    given = inputs("subject-name", "subject-digest", "subject-path", "push-to-registry")
    if given["subject-path"]:
        raise StandInError("the stand-in attests an image: give subject-name and subject-digest")
    if not given["subject-name"] or not DIGEST.fullmatch(given["subject-digest"]):
        raise StandInError(
            "subject-name and a subject-digest sha256:<64 hex> are required, got "
            f"{given['subject-name']!r} and {given['subject-digest']!r}"
        )
    boolean("push-to-registry", given["push-to-registry"] or "false")
    image = f"{given['subject-name']}@{given['subject-digest']}"
    if shutil.which("skopeo"):
        done = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StandInError(f"the subject {image} is not in its registry: {done.stderr[-300:]}")
    record("attest-build-provenance", given, subject=image)
    print(f"attested {image}")
    output(**{"attestation-id": "0", "attestation-url": "", "bundle-path": ""})


# --- peter-evans/create-pull-request ------------------------------------------------------------


def _request(method: str, path: str, token: str, body: Any = None) -> Any:
    return json.loads(_call(method, path, token, body) or b"null")


def create_pull_request() -> None:
    """Commit the workspace's changes to a branch, push it, open or update its pull request."""
    given = inputs(
        "token",
        "branch",
        "base",
        "title",
        "body",
        "body-path",
        "commit-message",
        "add-paths",
        "delete-branch",
        "author",
        "committer",
    )
    for required in ("token", "branch", "title"):
        if not given[required]:
            raise StandInError(f"input {required} is required by this workflow's use")
    if given["body"] and given["body-path"]:
        raise StandInError("give body or body-path, not both")
    record("create-pull-request", given)
    here = workspace()
    repository = os.environ["GITHUB_REPOSITORY"]
    base = given["base"] or git("rev-parse", "--abbrev-ref", "HEAD", cwd=here)
    paths = given["add-paths"].split() or ["-A"]
    git("add", *(["--", *paths] if paths != ["-A"] else paths), cwd=here)
    if not git("diff", "--cached", "--name-only", cwd=here):
        print("no changes: nothing to propose")
        output(**{"pull-request-operation": "none"})
        return
    branch = given["branch"]
    git("switch", "-q", "-C", branch, cwd=here)
    author = (
        given["author"]
        or "github-actions[bot] <41898282+github-actions[bot]@users.noreply.github.com>"
    )
    git(
        "-c",
        f"user.name={author.split(' <')[0]}",
        "-c",
        f"user.email={author.split(' <')[1].rstrip('>')}",
        "commit",
        "-q",
        "-m",
        given["commit-message"] or "[create-pull-request] automated change",
        cwd=here,
    )
    git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=here)
    head_sha = git("rev-parse", "HEAD", cwd=here)
    body = Path(given["body-path"]).read_text() if given["body-path"] else given["body"]
    owner = repository.split("/")[0]
    token = given["token"]
    open_ = _request("GET", f"/repos/{repository}/pulls?state=open&head={owner}:{branch}", token)
    if open_:
        number = open_[0]["number"]
        pull = _request(
            "PATCH",
            f"/repos/{repository}/pulls/{number}",
            token,
            {"title": given["title"], "body": body},
        )
        operation = "updated"
    else:
        pull = _request(
            "POST",
            f"/repos/{repository}/pulls",
            token,
            {"title": given["title"], "body": body, "head": branch, "base": base},
        )
        operation = "created"
    print(f"{operation} pull request #{pull['number']} from {branch}")
    output(
        **{
            "pull-request-number": str(pull["number"]),
            "pull-request-url": pull["html_url"],
            "pull-request-operation": operation,
            "pull-request-head-sha": head_sha,
            "pull-request-branch": branch,
        }
    )


ACTIONS: dict[str, Callable[[], None]] = {
    "checkout": checkout,
    "setup-uv": setup_uv,
    "upload-artifact": upload_artifact,
    "download-artifact": download_artifact,
    "login-action": login,
    "attest-build-provenance": attest,
    "create-pull-request": create_pull_request,
}


def main(argv: list[str]) -> int:
    """Run the stand-in named by the first argument; an error fails the step in one line."""
    try:
        ACTIONS[argv[0]]()
    except StandInError as error:
        print(f"::error::{argv[0]} stand-in: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
