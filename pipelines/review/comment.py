"""Post the pull request's report as one sticky comment, created once and then updated.

Standard library only: ``python3 pipelines/review/comment.py --pr N --body-file
reports/pr-comment.md`` runs without the project's environment, in the ``workflow_run`` job that
holds the write token (pr-comment.yml) and never runs the pull request's code. What it posts may
come from an artifact of a fork's run, so it is treated as untrusted data: the number and the body
are validated before any request, and with ``--head-sha`` the pull request must be the open one
whose head is that commit.

Environment: ``GITHUB_TOKEN`` (required), ``GITHUB_REPOSITORY`` (``owner/name``) and
``GITHUB_API_URL`` (default ``https://api.github.com``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "<!-- model-report -->"
MAX_BODY_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
MAX_NUMBER_BYTES = 32
DEFAULT_API_URL = "https://api.github.com"
TIMEOUT_SECONDS = 30
PER_PAGE = 100
LOOPBACK = {"127.0.0.1", "::1", "localhost"}

_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class CommentError(Exception):
    """A problem the user can fix (input, token, repository): reported in one line."""


def parse_pr_number(text: str) -> int:
    """Return the pull request number in ``text``, a positive integer, or raise CommentError."""
    value = text.strip()
    if not _NUMBER.fullmatch(value):
        shown = value[:20] + ("..." if len(value) > 20 else "")
        raise CommentError(f"the pull request number must be a positive integer, got {shown!r}")
    return int(value)


def read_pr_number(path: Path) -> int:
    """Read and validate a pull request number from a small file (an untrusted artifact)."""
    return parse_pr_number(_read_limited(path, MAX_NUMBER_BYTES, "pull request number file"))


def check_body(body: str) -> str:
    """Return ``body`` if it is a report GitHub accepts, or raise CommentError saying why."""
    if len(body) > MAX_BODY_CHARS:
        raise CommentError(
            f"the comment has {len(body):,} characters, over the limit of {MAX_BODY_CHARS:,}: "
            "shorten the report (GitHub refuses comments over 65,536)"
        )
    if MARKER not in body:
        raise CommentError(
            f"the comment lacks the marker {MARKER}: post the file `make report` writes"
        )
    return body


def read_body(path: Path) -> str:
    """Read and validate the comment body from ``path`` (an untrusted artifact)."""
    # Four bytes per character at most in UTF-8: a larger file cannot be a valid body.
    text = _read_limited(path, 4 * MAX_BODY_CHARS, "comment file")
    return check_body(text)


def _read_limited(path: Path, limit: int, what: str) -> str:
    if path.is_symlink() or not path.is_file():
        raise CommentError(f"{what} {path} is missing or not a regular file")
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CommentError(f"{what} {path} is larger than {limit:,} bytes: refusing to read it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommentError(f"{what} {path} is not UTF-8 text ({error.reason})") from error


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects would carry the token to another address: treat them as errors."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class GitHub:
    """The few REST calls the sticky comment needs, on one repository."""

    api_url: str
    repository: str
    token: str

    def __post_init__(self) -> None:
        base = urllib.parse.urlsplit(self.api_url)
        if base.scheme != "https" and not (base.scheme == "http" and base.hostname in LOOPBACK):
            raise CommentError(
                f"GITHUB_API_URL must be an https:// address, got {self.api_url!r}: "
                "the token is sent with every request"
            )
        if not _REPOSITORY.fullmatch(self.repository):
            raise CommentError(
                f"GITHUB_REPOSITORY must be owner/name, got {self.repository!r}: "
                "set it to the repository that holds the pull request"
            )
        if not self.token:
            raise CommentError(
                "GITHUB_TOKEN is not set: give it a token that may write pull requests"
            )

    def request(self, method: str, path: str, body: Any = None) -> tuple[Any, str | None]:
        """Call the API; return the decoded JSON and the URL of the next page, if any.

        ``path`` is relative to the API (``/repos/...``) or a full URL on the same host (the
        ``Link`` header's next page).
        """
        url = path if "://" in path else self.api_url.rstrip("/") + path
        if urllib.parse.urlsplit(url)[:2] != urllib.parse.urlsplit(self.api_url)[:2]:
            raise CommentError(f"refusing to send the token to {url}: not on {self.api_url}")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (scheme checked)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("X-GitHub-Api-Version", "2022-11-28")
        request.add_header("User-Agent", "model-report-comment")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                payload = response.read()
                link = response.headers.get("Link", "")
        except urllib.error.HTTPError as error:
            raise CommentError(self._explain(method, url, error)) from None
        except OSError as error:  # unreachable host, refused connection, timeout
            reason = getattr(error, "reason", error)
            raise CommentError(f"cannot reach {self.api_url}: {reason}") from None
        match = _NEXT.search(link)
        return (json.loads(payload) if payload else None), (match.group(1) if match else None)

    def _explain(self, method: str, url: str, error: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(error.read() or b"{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        where = f"{method} {urllib.parse.urlsplit(url).path} got HTTP {error.code}"
        detail = f" ({message})" if message else ""
        if error.code in {401, 403}:
            return (
                f"{where}{detail}: the token may not comment on pull requests; a fork's token "
                "cannot comment: this runs in pr-comment.yml (pull-requests: write); locally, "
                "use a token with write access to pull requests"
            )
        if error.code == 404:
            return (
                f"{where}{detail}: no such pull request or repository; check the number and "
                f"GITHUB_REPOSITORY ({self.repository}), and that the token can see it"
            )
        return f"{where}{detail}"

    def pages(self, path: str) -> Iterator[Any]:
        """Yield every item of a paginated list, following the ``Link`` header."""
        page: str | None = path
        while page is not None:
            items, page = self.request("GET", page)
            yield from items


def find_comment(api: GitHub, pr: int, author: str | None = None) -> dict[str, Any] | None:
    """The first comment on the pull request that carries the marker (by ``author``, if given)."""
    for comment in api.pages(f"/repos/{api.repository}/issues/{pr}/comments?per_page={PER_PAGE}"):
        login = (comment.get("user") or {}).get("login")
        if MARKER in (comment.get("body") or "") and author in {None, login}:
            return comment
    return None


def upsert_comment(api: GitHub, pr: int, body: str, author: str | None = None) -> tuple[str, str]:
    """Update the pull request's sticky comment, or create it; return (what was done, its URL)."""
    existing = find_comment(api, pr, author)
    if existing is None:
        created, _ = api.request(
            "POST", f"/repos/{api.repository}/issues/{pr}/comments", {"body": body}
        )
        return "created", created.get("html_url", "")
    updated, _ = api.request(
        "PATCH", f"/repos/{api.repository}/issues/comments/{existing['id']}", {"body": body}
    )
    return "updated", updated.get("html_url", "")


def pr_for_head(api: GitHub, head_sha: str) -> int:
    """The number of the open pull request whose head is ``head_sha``.

    ``workflow_run.pull_requests`` is empty for forks, so the pull request is found from the
    commit; its head must still be that commit (a newer push makes this report stale).
    """
    if not _SHA.fullmatch(head_sha):
        raise CommentError(f"--head-sha must be a 40-hex commit SHA, got {head_sha[:50]!r}")
    pulls = api.pages(f"/repos/{api.repository}/commits/{head_sha}/pulls?per_page={PER_PAGE}")
    numbers = sorted(
        {
            int(pull["number"])
            for pull in pulls
            if pull.get("state") == "open" and (pull.get("head") or {}).get("sha") == head_sha
        }
    )
    if len(numbers) != 1:
        found = "no open pull request" if not numbers else f"several ({numbers})"
        raise CommentError(
            f"{found} has head commit {head_sha}: the pull request was updated or closed since "
            "this report was made; the newer run posts its own"
        )
    return numbers[0]


def resolve_pr(api: GitHub, pr: int | None, head_sha: str | None) -> int:
    """The pull request to comment on: given, found by head commit, or both and agreeing."""
    if head_sha is None:
        if pr is None:
            raise CommentError("give the pull request: --pr N, --pr-file PATH or --head-sha SHA")
        return pr
    found = pr_for_head(api, head_sha)
    if pr is not None and pr != found:
        raise CommentError(
            f"the report names pull request #{pr}, but commit {head_sha} is the head of "
            f"#{found}: refusing to post it"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """Validate the inputs, then create or update the sticky comment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    number = parser.add_mutually_exclusive_group()
    number.add_argument("--pr", help="pull request number")
    number.add_argument("--pr-file", type=Path, help="file holding the pull request number")
    parser.add_argument("--head-sha", help="find (or check) the pull request by its head commit")
    parser.add_argument("--body-file", type=Path, required=True, help="the comment (Markdown)")
    parser.add_argument("--author", help="only a comment by this login is updated")
    args = parser.parse_args(argv)
    try:
        # Everything local is checked before the first request.
        pr = parse_pr_number(args.pr) if args.pr is not None else None
        if args.pr_file is not None:
            pr = read_pr_number(args.pr_file)
        body = read_body(args.body_file)
        api = GitHub(
            api_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL,
            repository=os.environ.get("GITHUB_REPOSITORY", ""),
            token=os.environ.get("GITHUB_TOKEN", ""),
        )
        target = resolve_pr(api, pr, args.head_sha)
        done, url = upsert_comment(api, target, body, args.author)
    except CommentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{done} the report comment on pull request #{target}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
