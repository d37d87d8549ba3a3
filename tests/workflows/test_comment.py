"""pipelines/review/comment.py against a local HTTP server that answers like GitHub's REST API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.review import comment
from pipelines.review.comment import MARKER, MAX_BODY_CHARS

ROOT = Path(__file__).resolve().parents[2]
REPO = "octo/model"
TOKEN = "t0ken-for-tests"  # noqa: S105 (only ever sent to the local server)
PAGE = 2  # comments per page: small, so that a few comments span several pages
HEAD = "a" * 40


@dataclass
class FakeGitHub:
    """The state behind the fake API: comments per pull request, open pull requests by head."""

    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    heads: dict[int, str] = field(default_factory=dict)
    refuse: int | None = None  # answer every request with this status
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    next_id: int = 1000
    url: str = ""

    def add(self, pr: int, body: str, login: str = "someone") -> dict[str, Any]:
        self.next_id += 1
        made = {"id": self.next_id, "body": body, "user": {"login": login}}
        made["html_url"] = f"https://github.example/{REPO}/pull/{pr}#issuecomment-{self.next_id}"
        self.comments.setdefault(pr, []).append(made)
        return made

    def marked(self, pr: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.get(pr, []) if MARKER in c["body"]]

    def handle(self, method: str, target: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """Answer one request as GitHub would: (status, JSON payload, extra headers)."""
        if self.refuse:
            return self.refuse, {"message": "Resource not accessible by integration"}, {}
        path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
        prefix = f"/repos/{REPO}"
        if m := re.fullmatch(rf"{prefix}/issues/(\d+)/comments", path):
            return self.issue_comments(method, int(m.group(1)), path, query, body)
        if (m := re.fullmatch(rf"{prefix}/issues/comments/(\d+)", path)) and method == "PATCH":
            found = [c for cs in self.comments.values() for c in cs if c["id"] == int(m.group(1))]
            for existing in found:
                existing["body"] = body["body"]
            return (200, found[0], {}) if found else (404, {"message": "Not Found"}, {})
        if m := re.fullmatch(rf"{prefix}/commits/([0-9a-f]{{40}})/pulls", path):
            heads = self.heads.items()
            pulls = [{"number": n, "state": "open", "head": {"sha": h}} for n, h in heads]
            return 200, [p for p in pulls if p["head"]["sha"] == m.group(1)], {}
        return 404, {"message": "Not Found"}, {}

    def issue_comments(
        self, method: str, pr: int, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """List one page of a pull request's comments (Link to the next), or create one."""
        if pr not in self.heads:
            return 404, {"message": "Not Found"}, {}
        if method == "POST":
            return 201, self.add(pr, body["body"], "github-actions[bot]"), {}
        page = int(query.get("page", ["1"])[0])
        items = self.comments.get(pr, [])
        headers = {}
        if page * PAGE < len(items):
            headers["Link"] = f'<{self.url}{path}?page={page + 1}>; rel="next"'
        return 200, items[(page - 1) * PAGE : page * PAGE], headers


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """A fake GitHub API on 127.0.0.1 (random port), with the environment pointing at it."""
    state = FakeGitHub(heads={7: HEAD, 8: "b" * 40})

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((self.command, self.path, self.headers.get("Authorization")))
            status, payload, headers = state.handle(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_API_URL", state.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def report(tmp_path: Path, text: str = "Gate: passed") -> Path:
    path = tmp_path / "pr-comment.md"
    path.write_text(f"{MARKER}\n## Model report\n{text}\n")
    return path


def post(*args: str | Path) -> int:
    return comment.main([str(a) for a in args])


def test_creates_the_comment_after_reading_every_page(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(5):  # three pages, none with the marker
        github.add(7, f"review note {n}")
    assert post("--pr", "7", "--body-file", report(tmp_path)) == 0
    gets = [path for method, path, _ in github.requests if method == "GET"]
    assert len(gets) == 3
    assert [m for m, _, _ in github.requests] == ["GET", "GET", "GET", "POST"]
    assert [c["body"] for c in github.marked(7)] == [report(tmp_path).read_text()]
    assert {auth for _, _, auth in github.requests} == {f"Bearer {TOKEN}"}
    assert "created the report comment on pull request #7" in capsys.readouterr().out


def test_updates_the_marked_comment_found_on_a_later_page(
    github: FakeGitHub, tmp_path: Path
) -> None:
    for n in range(4):
        github.add(7, f"review note {n}")
    sticky = github.add(7, f"{MARKER}\nold report")  # page 3
    github.add(7, "a later note")
    assert post("--pr", "7", "--body-file", report(tmp_path, "Gate: failed")) == 0
    assert [m for m, _, _ in github.requests] == ["GET", "GET", "GET", "PATCH"]
    assert github.requests[-1][1] == f"/repos/{REPO}/issues/comments/{sticky['id']}"
    assert github.marked(7) == [sticky]
    assert "Gate: failed" in sticky["body"]
    assert len(github.comments[7]) == 6


def test_posting_twice_leaves_one_comment(github: FakeGitHub, tmp_path: Path) -> None:
    assert post("--pr", "7", "--body-file", report(tmp_path, "first")) == 0
    assert post("--pr", "7", "--body-file", report(tmp_path, "second")) == 0
    marked = github.marked(7)
    assert len(marked) == 1
    assert "second" in marked[0]["body"]
    assert [m for m, _, _ in github.requests] == ["GET", "POST", "GET", "PATCH"]


def test_only_the_named_authors_comment_is_updated(github: FakeGitHub, tmp_path: Path) -> None:
    planted = github.add(7, f"{MARKER}\nnot the bot's", login="someone")
    assert (
        post("--pr", "7", "--body-file", report(tmp_path), "--author", "github-actions[bot]") == 0
    )
    assert planted["body"] == f"{MARKER}\nnot the bot's"
    assert [c["user"]["login"] for c in github.marked(7)] == ["someone", "github-actions[bot]"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_without_write_access_is_a_clear_error(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    github.refuse = status
    assert post("--pr", "7", "--body-file", report(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert f"HTTP {status}" in err
    assert "a fork's token cannot comment: this runs in pr-comment.yml" in err
    assert "Resource not accessible by integration" in err


def test_an_unknown_pull_request_is_a_clear_error(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert post("--pr", "404", "--body-file", report(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err
    assert "no such pull request or repository" in err
    assert REPO in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "number", ["0", "-3", "abc", "7.0", "1e3", "", "7; rm -rf /", "$(id)", "12345678901"]
)
def test_an_invalid_pull_request_number_is_refused_before_any_request(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], number: str
) -> None:
    assert post("--pr", number, "--body-file", report(tmp_path)) == 1
    assert "must be a positive integer" in capsys.readouterr().err
    assert github.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"{MARKER}\n" + "x" * MAX_BODY_CHARS, "over the limit of 60,000"),
        (f"{MARKER}\n" + "é" * (2 * MAX_BODY_CHARS), "larger than"),
        ("## Model report, without the marker\n", "lacks the marker"),
    ],
)
def test_a_bad_body_is_refused_before_any_request(
    github: FakeGitHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    body = tmp_path / "pr-comment.md"
    body.write_text(content)
    assert post("--pr", "7", "--body-file", body) == 1
    assert message in capsys.readouterr().err
    assert github.requests == []


def test_a_symlinked_artifact_is_not_read(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "pr-number.txt"
    link.symlink_to(report(tmp_path))
    assert post("--pr-file", link, "--body-file", report(tmp_path)) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert github.requests == []


def test_the_pull_request_is_found_by_its_head_commit(github: FakeGitHub, tmp_path: Path) -> None:
    number = tmp_path / "pr-number.txt"
    number.write_text("7\n")
    args = ("--pr-file", number, "--head-sha", HEAD, "--body-file", report(tmp_path))
    assert post(*args) == 0
    assert github.requests[0][1].startswith(f"/repos/{REPO}/commits/{HEAD}/pulls")
    assert len(github.marked(7)) == 1
    assert post("--head-sha", HEAD, "--body-file", report(tmp_path)) == 0
    assert len(github.marked(7)) == 1


def test_an_artifact_naming_another_pull_request_is_refused(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert post("--pr", "8", "--head-sha", HEAD, "--body-file", report(tmp_path)) == 1
    assert "names pull request #8, but commit" in capsys.readouterr().err
    assert github.comments == {}


def test_a_head_commit_with_no_open_pull_request_is_refused(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert post("--head-sha", "c" * 40, "--body-file", report(tmp_path)) == 1
    assert "no open pull request has head commit" in capsys.readouterr().err
    assert [m for m, _, _ in github.requests] == ["GET"]


def test_the_token_goes_to_the_api_host_only() -> None:
    api = comment.GitHub("http://127.0.0.1:9", REPO, TOKEN)
    with pytest.raises(comment.CommentError, match="refusing to send the token"):
        api.request("GET", "http://evil.example/repos/x")
    with pytest.raises(comment.CommentError, match="https://"):
        comment.GitHub("http://api.github.example", REPO, TOKEN)
    with pytest.raises(comment.CommentError, match="GITHUB_TOKEN is not set"):
        comment.GitHub("https://api.github.com", REPO, "")
    with pytest.raises(comment.CommentError, match="owner/name"):
        comment.GitHub("https://api.github.com", "not a repository", TOKEN)


def test_runs_with_the_standard_library_alone(github: FakeGitHub, tmp_path: Path) -> None:
    """As pr-comment.yml runs it: a bare python3, no project environment (-S: no site-packages)."""
    body = str(report(tmp_path))
    env = {"GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": TOKEN}
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "pipelines/review/comment.py",
            "--pr",
            "7",
            "--body-file",
            body,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "created the report comment on pull request #7" in done.stdout
    assert len(github.marked(7)) == 1
