"""pipelines/review/comment.py against a local HTTP server that answers like GitHub's REST API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.review import comment
from pipelines.review.comment import MARKER, MAX_BODY_CHARS
from tools.act.github import GitHub, serve

ROOT = Path(__file__).resolve().parents[2]
REPO = "octo/model"
TOKEN = "t0ken-for-tests"  # noqa: S105 (only ever sent to the local server)
PAGE = 2  # comments per page: small, so that a few comments span several pages
HEAD = "a" * 40


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHub]:
    """The GitHub API stand-in on 127.0.0.1, the environment pointing at it; PRs 7 and 8 open."""
    state = GitHub(REPO, {TOKEN: "write"}, page_size=PAGE)
    state.open_pull(7, "feature", HEAD)
    state.open_pull(8, "other", "b" * 40)
    with serve(state):
        monkeypatch.setenv("GITHUB_API_URL", state.url)
        monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        yield state


def marked(github: GitHub, pr: int) -> list[dict[str, Any]]:
    return [c for c in github.comments.get(pr, []) if MARKER in c["body"]]


def methods(github: GitHub) -> list[str]:
    return [c.method for c in github.calls]


def report(tmp_path: Path, text: str = "Gate: passed") -> Path:
    path = tmp_path / "pr-comment.md"
    path.write_text(f"{MARKER}\n## Model report\n{text}\n")
    return path


def post(*args: str | Path) -> int:
    return comment.main([str(a) for a in args])


def test_creates_the_comment_after_reading_every_page(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(5):  # three pages, none with the marker
        github.add_comment(7, f"review note {n}")
    assert post("--pr", "7", "--body-file", report(tmp_path)) == 0
    gets = [c.path for c in github.calls if c.method == "GET"]
    assert len(gets) == 3
    assert methods(github) == ["GET", "GET", "GET", "POST"]
    assert [c["body"] for c in marked(github, 7)] == [report(tmp_path).read_text()]
    assert {c.token for c in github.calls} == {"write"}
    assert "created the report comment on pull request #7" in capsys.readouterr().out


def test_updates_the_marked_comment_found_on_a_later_page(github: GitHub, tmp_path: Path) -> None:
    for n in range(4):
        github.add_comment(7, f"review note {n}")
    sticky = github.add_comment(7, f"{MARKER}\nold report")  # page 3
    github.add_comment(7, "a later note")
    assert post("--pr", "7", "--body-file", report(tmp_path, "Gate: failed")) == 0
    assert methods(github) == ["GET", "GET", "GET", "PATCH"]
    assert github.calls[-1].path == f"/repos/{REPO}/issues/comments/{sticky['id']}"
    assert marked(github, 7) == [sticky]
    assert "Gate: failed" in sticky["body"]
    assert len(github.comments[7]) == 6


def test_posting_twice_leaves_one_comment(github: GitHub, tmp_path: Path) -> None:
    assert post("--pr", "7", "--body-file", report(tmp_path, "first")) == 0
    assert post("--pr", "7", "--body-file", report(tmp_path, "second")) == 0
    (sticky,) = marked(github, 7)
    assert "second" in sticky["body"]
    assert methods(github) == ["GET", "POST", "GET", "PATCH"]


def test_only_the_named_authors_comment_is_updated(github: GitHub, tmp_path: Path) -> None:
    planted = github.add_comment(7, f"{MARKER}\nnot the bot's", login="someone")
    assert (
        post("--pr", "7", "--body-file", report(tmp_path), "--author", "github-actions[bot]") == 0
    )
    assert planted["body"] == f"{MARKER}\nnot the bot's"
    assert [c["user"]["login"] for c in marked(github, 7)] == ["someone", "github-actions[bot]"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_without_write_access_is_a_clear_error(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
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
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], number: str
) -> None:
    assert post("--pr", number, "--body-file", report(tmp_path)) == 1
    assert "must be a positive integer" in capsys.readouterr().err
    assert github.calls == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"{MARKER}\n" + "x" * MAX_BODY_CHARS, "over the limit of 60,000"),
        (f"{MARKER}\n" + "é" * (2 * MAX_BODY_CHARS), "larger than"),
        ("## Model report, without the marker\n", "lacks the marker"),
    ],
)
def test_a_bad_body_is_refused_before_any_request(
    github: GitHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    body = tmp_path / "pr-comment.md"
    body.write_text(content)
    assert post("--pr", "7", "--body-file", body) == 1
    assert message in capsys.readouterr().err
    assert github.calls == []


def test_a_symlinked_artifact_is_not_read(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "pr-number.txt"
    link.symlink_to(report(tmp_path))
    assert post("--pr-file", link, "--body-file", report(tmp_path)) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert github.calls == []


def test_the_pull_request_is_found_by_its_head_commit(github: GitHub, tmp_path: Path) -> None:
    number = tmp_path / "pr-number.txt"
    number.write_text("7\n")
    args = ("--pr-file", number, "--head-sha", HEAD, "--body-file", report(tmp_path))
    assert post(*args) == 0
    assert github.calls[0].path.startswith(f"/repos/{REPO}/commits/{HEAD}/pulls")
    assert len(marked(github, 7)) == 1
    assert post("--head-sha", HEAD, "--body-file", report(tmp_path)) == 0
    assert len(marked(github, 7)) == 1


def test_an_artifact_naming_another_pull_request_is_refused(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert post("--pr", "8", "--head-sha", HEAD, "--body-file", report(tmp_path)) == 1
    assert "names pull request #8, but commit" in capsys.readouterr().err
    assert github.comments == {}


def test_a_head_commit_with_no_open_pull_request_is_refused(
    github: GitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert post("--head-sha", "c" * 40, "--body-file", report(tmp_path)) == 1
    assert "no open pull request has head commit" in capsys.readouterr().err
    assert methods(github) == ["GET"]


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


def test_runs_with_the_standard_library_alone(github: GitHub, tmp_path: Path) -> None:
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
    assert len(marked(github, 7)) == 1
