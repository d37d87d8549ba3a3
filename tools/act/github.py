"""A loopback stand-in for the part of GitHub's REST API that the workflows call.

It answers as GitHub does for what the workflows and their stand-in actions use: pull-request
comments (listed by page with a ``Link`` header, created, updated), pull requests (by head commit,
by branch, created, updated), a workflow run's artifacts (listed, downloaded as a zip), and what
``make github-settings`` sets: repository rulesets (listed, read, created, updated) and the Actions
workflow permissions (read, set; a new repository's token may write, as older ones do). Every
call is recorded with the kind of token it carried. A token is ``write`` or ``read``: writing with
a read token gets GitHub's 403, as a fork's pull-request run does; an unknown token gets 401.

The artifacts are the zips the upload-artifact stand-in writes under ``<artifacts>/<run id>/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, Any, dict[str, str]]
NOT_FOUND: Answer = (404, {"message": "Not Found"}, {})
FORBIDDEN: Answer = (403, {"message": "Resource not accessible by integration"}, {})


@dataclass(frozen=True)
class Call:
    """One request as the stand-in saw it."""

    method: str
    path: str
    token: str | None  # "write", "read", or None when no known token was sent
    status: int
    body: Any = None


@dataclass
class GitHub:
    """The repository's state behind the API: pull requests, comments, artifacts, and the calls.

    Args:
        repository: ``owner/name``.
        tokens: token -> ``"write"`` or ``"read"``.
        origin: the bare git repository whose branches pull requests point at.
        artifacts: the folder of uploaded artifacts, ``<run id>/<name>.zip``.
    """

    repository: str
    tokens: dict[str, str]
    origin: Path | None = None
    artifacts: Path | None = None
    page_size: int = 30
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    rulesets: dict[int, dict[str, Any]] = field(default_factory=dict)
    workflow_permissions: dict[str, Any] = field(
        default_factory=lambda: {
            "default_workflow_permissions": "write",
            "can_approve_pull_request_reviews": True,
        }
    )
    refuse: int | None = None  # answer every request with this status
    url: str = ""
    _next_id: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what the simulated GitHub does on its own side ---------------------------------------

    def open_pull(self, number: int, head_ref: str, head_sha: str, base: str = "main") -> None:
        """Open pull request ``number`` (or move its head, as a push to its branch does)."""
        pull = self.pulls.setdefault(number, {"number": number, "title": f"#{number}", "body": ""})
        pull |= {
            "state": "open",
            "head": {"ref": head_ref, "sha": head_sha},
            "base": {"ref": base},
            "html_url": f"https://github.com/{self.repository}/pull/{number}",
        }

    def add_comment(self, pr: int, body: str, login: str = "someone") -> dict[str, Any]:
        """Add a comment to a pull request, as a person would."""
        self._next_id += 1
        made = {
            "id": self._next_id,
            "body": body,
            "user": {"login": login},
            "html_url": f"https://github.com/{self.repository}/pull/{pr}#issuecomment-{self._next_id}",
        }
        self.comments.setdefault(pr, []).append(made)
        return made

    def writes(self) -> list[Call]:
        """The calls that changed something."""
        return [c for c in self.calls if c.method in {"POST", "PATCH", "PUT", "DELETE"}]

    # --- the API --------------------------------------------------------------------------------

    def answer(self, method: str, target: str, token: str | None, body: Any) -> Answer:
        """Answer one request as GitHub would, and record it."""
        with self._lock:
            kind = self.tokens.get(token or "")
            status, payload, headers = self._route(method, target, kind, body)
            self.calls.append(Call(method, urlsplit(target).path, kind, status, body))
            return status, payload, headers

    def _route(self, method: str, target: str, kind: str | None, body: Any) -> Answer:
        refused = self._refused(method, kind)
        if refused is not None:
            return refused
        path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
        prefix = f"/repos/{self.repository}"
        if path == prefix and method == "GET":
            owner, name = self.repository.split("/")
            return (
                200,
                {
                    "full_name": self.repository,
                    "name": name,
                    "owner": {"login": owner},
                    "default_branch": "main",
                    "private": False,
                },
                {},
            )
        if not path.startswith(prefix + "/"):
            return NOT_FOUND
        rest = path[len(prefix) :]
        routes = [
            (r"/issues/(\d+)/comments", self._issue_comments),
            (r"/issues/comments/(\d+)", self._comment),
            (r"/commits/([0-9a-f]{40})/pulls", self._pulls_of_commit),
            (r"/pulls", self._pulls),
            (r"/pulls/(\d+)", self._pull),
            (r"/actions/runs/(\d+)/artifacts", self._run_artifacts),
            (r"/actions/artifacts/(\d+)/zip", self._artifact_zip),
            (r"/rulesets", self._rulesets),
            (r"/rulesets/(\d+)", self._ruleset),
            (r"/actions/permissions/workflow", self._workflow_permissions),
        ]
        for pattern, handler in routes:
            if m := re.fullmatch(pattern, rest):
                return handler(method, m.group(1) if m.groups() else "", query, body)
        return NOT_FOUND

    def _refused(self, method: str, kind: str | None) -> Answer | None:
        if self.refuse:
            return self.refuse, FORBIDDEN[1], {}
        if kind is None:
            return 401, {"message": "Bad credentials"}, {}
        if method != "GET" and kind != "write":
            return FORBIDDEN
        return None

    def _page(self, items: list[Any], path: str, query: dict[str, list[str]]) -> Answer:
        page = int(query.get("page", ["1"])[0])
        size = min(int(query.get("per_page", [str(self.page_size)])[0]), self.page_size)
        headers: dict[str, str] = {}
        if page * size < len(items):
            headers["Link"] = f'<{self.url}{path}?per_page={size}&page={page + 1}>; rel="next"'
        return 200, items[(page - 1) * size : page * size], headers

    def _issue_comments(self, method: str, pr: str, query: Any, body: Any) -> Answer:
        if int(pr) not in self.pulls:
            return NOT_FOUND
        if method == "POST":
            return 201, self.add_comment(int(pr), body["body"], "github-actions[bot]"), {}
        path = f"/repos/{self.repository}/issues/{pr}/comments"
        return self._page(self.comments.get(int(pr), []), path, query)

    def _comment(self, method: str, number: str, query: Any, body: Any) -> Answer:
        found = [c for cs in self.comments.values() for c in cs if c["id"] == int(number)]
        if not found or method != "PATCH":
            return NOT_FOUND
        found[0]["body"] = body["body"]
        return 200, found[0], {}

    def _pulls_of_commit(self, method: str, sha: str, query: Any, body: Any) -> Answer:
        pulls = [p for p in self.pulls.values() if p["head"]["sha"] == sha]
        return self._page(pulls, f"/repos/{self.repository}/commits/{sha}/pulls", query)

    def _pulls(self, method: str, _: str, query: dict[str, list[str]], body: Any) -> Answer:
        if method == "POST":
            return self._create_pull(body)
        state = query.get("state", ["open"])[0]
        head = query.get("head", [""])[0].rpartition(":")[2]
        pulls = [
            p
            for p in self.pulls.values()
            if state in {"all", p["state"]} and head in {"", p["head"]["ref"]}
        ]
        return self._page(pulls, f"/repos/{self.repository}/pulls", query)

    def _create_pull(self, body: dict[str, Any]) -> Answer:
        head = str(body.get("head", "")).rpartition(":")[2]
        sha = self._branch_sha(head)
        if sha is None:
            return 422, {"message": "Validation Failed", "errors": [{"field": "head"}]}, {}
        if any(p["head"]["ref"] == head and p["state"] == "open" for p in self.pulls.values()):
            return 422, {"message": f"A pull request already exists for {head}."}, {}
        number = max(self.pulls, default=0) + 1
        self.open_pull(number, head, sha, body.get("base", "main"))
        self.pulls[number] |= {"title": body.get("title", ""), "body": body.get("body", "")}
        return 201, self.pulls[number], {}

    def _pull(self, method: str, number: str, query: Any, body: Any) -> Answer:
        pull = self.pulls.get(int(number))
        if pull is None:
            return NOT_FOUND
        if method == "PATCH":
            pull |= {k: v for k, v in body.items() if k in {"title", "body", "state"}}
            if (sha := self._branch_sha(pull["head"]["ref"])) is not None:
                pull["head"]["sha"] = sha
        return 200, pull, {}

    def _branch_sha(self, branch: str) -> str | None:
        if self.origin is None or not branch:
            return None
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=self.origin,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or None

    def _artifact_list(self) -> list[tuple[int, str, Path]]:
        """Every uploaded artifact as (id, run id, zip), ids in a stable order."""
        if self.artifacts is None or not self.artifacts.exists():
            return []
        found = sorted(self.artifacts.glob("*/*.zip"), key=lambda p: (int(p.parent.name), p.name))
        return [(i, p.parent.name, p) for i, p in enumerate(found, start=1)]

    def _run_artifacts(self, method: str, run: str, query: dict[str, list[str]], _: Any) -> Answer:
        name = query.get("name", [None])[0]
        prefix = f"/repos/{self.repository}"
        listed = [
            {
                "id": i,
                "name": p.stem,
                "size_in_bytes": p.stat().st_size,
                "archive_download_url": f"{self.url}{prefix}/actions/artifacts/{i}/zip",
                "expired": False,
                "workflow_run": {"id": int(run)},
            }
            for i, run_id, p in self._artifact_list()
            if run_id == run and name in {None, p.stem}
        ]
        return 200, {"total_count": len(listed), "artifacts": listed}, {}

    def _artifact_zip(self, method: str, number: str, query: Any, _: Any) -> Answer:
        for i, _run, p in self._artifact_list():
            if i == int(number):
                return 200, p.read_bytes(), {"Content-Type": "application/zip"}
        return NOT_FOUND

    # --- rulesets and Actions settings (make github-settings) ----------------------------------

    def _rulesets(self, method: str, _: str, query: Any, body: Any) -> Answer:
        if method == "POST":
            return self._save_ruleset(None, body)
        if method != "GET":
            return NOT_FOUND
        summary = (
            *("id", "name", "target", "source_type", "source", "enforcement", "node_id"),
            *("_links", "created_at", "updated_at"),
        )
        return 200, [{k: r[k] for k in summary} for r in self.rulesets.values()], {}

    def _ruleset(self, method: str, number: str, query: Any, body: Any) -> Answer:
        if int(number) not in self.rulesets:
            return NOT_FOUND
        if method == "PUT":
            return self._save_ruleset(int(number), body)
        if method == "DELETE":
            del self.rulesets[int(number)]
            return 204, None, {}
        return 200, self.rulesets[int(number)], {}

    def _save_ruleset(self, number: int | None, body: Any) -> Answer:
        """Create (``number`` None) or replace a ruleset, checked as GitHub checks it."""
        problem = _ruleset_problem(body)
        others = [r["name"] for i, r in self.rulesets.items() if i != number]
        if problem is None and body["name"] in others:
            problem = "Name must be unique"
        if problem is not None:
            return 422, {"message": "Validation Failed", "errors": [problem], "status": "422"}, {}
        created = number is None
        if number is None:
            self._next_id += 1
            number = self._next_id
        stamp = "2026-01-01T00:00:00Z"
        url = f"{self.url}/repos/{self.repository}/rulesets/{number}"
        rules = json.loads(json.dumps(body.get("rules", [])))
        for rule in rules:
            if rule["type"] == "pull_request":  # GitHub fills in a parameter it was not sent
                merges = ["merge", "squash", "rebase"]
                rule["parameters"].setdefault("allowed_merge_methods", merges)
        self.rulesets[number] = {
            "id": number,
            "name": body["name"],
            "target": body.get("target", "branch"),
            "source_type": "Repository",
            "source": self.repository,
            "enforcement": body["enforcement"],
            "bypass_actors": body.get("bypass_actors", []),
            "current_user_can_bypass": "never",
            "node_id": f"RRS_{number}",
            "_links": {
                "self": {"href": url},
                "html": {"href": f"https://github.com/{self.repository}/rules/{number}"},
            },
            "conditions": body.get("conditions"),
            "rules": rules,
            "created_at": self.rulesets.get(number, {}).get("created_at", stamp),
            "updated_at": stamp,
        }
        return (201 if created else 200), self.rulesets[number], {}

    def _workflow_permissions(self, method: str, _: str, query: Any, body: Any) -> Answer:
        if method == "PUT":
            level = body.get("default_workflow_permissions", "read")
            approve = body.get("can_approve_pull_request_reviews", False)
            if level not in {"read", "write"} or not isinstance(approve, bool):
                return 422, {"message": "Invalid request.", "status": "422"}, {}
            self.workflow_permissions = {
                "default_workflow_permissions": level,
                "can_approve_pull_request_reviews": approve,
            }
            return 204, None, {}
        return 200, self.workflow_permissions, {}


# The rules `make github-settings` may send, with the parameters GitHub requires of each.
RULE_PARAMETERS = {
    "creation": set(),
    "deletion": set(),
    "non_fast_forward": set(),
    "required_linear_history": set(),
    "required_signatures": set(),
    "pull_request": {
        "dismiss_stale_reviews_on_push",
        "require_code_owner_review",
        "require_last_push_approval",
        "required_approving_review_count",
        "required_review_thread_resolution",
    },
    "required_status_checks": {"required_status_checks", "strict_required_status_checks_policy"},
}


def _ruleset_problem(body: Any) -> str | None:
    """What GitHub's validation would say of a ruleset's body, or None when it is valid."""
    if not isinstance(body, dict) or not body.get("name"):
        return "Name can't be blank"
    if body.get("target", "branch") not in {"branch", "tag", "push"}:
        return f"Invalid target: {body.get('target')}"
    if body.get("enforcement") not in {"disabled", "active", "evaluate"}:
        return f"Invalid enforcement: {body.get('enforcement')}"
    for rule in body.get("rules", []):
        kind = rule.get("type")
        if kind not in RULE_PARAMETERS:
            return f"Invalid rule '{kind}': "
        missing = RULE_PARAMETERS[kind] - set(rule.get("parameters", {}))
        if missing:
            return f"Invalid rule '{kind}': missing parameters {sorted(missing)}"
    return None


@contextmanager
def serve(state: GitHub) -> Iterator[GitHub]:
    """Serve ``state`` on 127.0.0.1 (a free port, in ``state.url``) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization") or ""
            token = auth.partition(" ")[2] or None
            answer: Answer
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                answer = 400, {"message": "Problems parsing JSON"}, {}
            else:
                answer = state.answer(self.command, self.path, token, body)
            status, payload, headers = answer
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            data = b"" if status == 204 else data
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
