"""``make github-settings``: the repository's GitHub settings as code, applied through the REST API.

Two things are set: the rulesets, JSON files in GitHub's own format in ``.github/rulesets/``
(``main.json`` protects the default branch: pull requests with a code owner's approval, the CI
checks required, no force push, no deletion; ``deploy.json`` keeps the deploy branches the release
writes, ``deploy/staging``, moving forward only, undeleted), and the Actions settings every
workflow relies on (the workflow token is read-only unless a job asks for more, and Actions may
not approve pull requests).

Applying is idempotent: a ruleset with the same name is updated in place, or created, and only
when it differs from its file; a second run changes nothing and says so. ``--dry-run`` prints a
diff of what GitHub has against what is wanted and changes nothing.

The token comes from ``GITHUB_TOKEN`` or ``GH_TOKEN``, the repository from ``--repository`` or the
``origin`` remote, the API from ``GITHUB_API_URL`` (GitHub Enterprise Server) or api.github.com.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_API = "https://api.github.com"
# What every workflow relies on: least privilege unless a job asks for more (each declares its own
# `permissions:`), and no workflow can approve a pull request, which would bypass the review rule.
WORKFLOW_PERMISSIONS: dict[str, Any] = {
    "default_workflow_permissions": "read",
    "can_approve_pull_request_reviews": False,
}
SCOPES = (
    "a fine-grained token with the repository permission Administration: read and write (or a "
    "classic token with the `repo` scope) from an administrator of the repository"
)

Request = Callable[[str, str, Any], Any]


class SettingsError(Exception):
    """Something the person running ``make github-settings`` has to fix; the message says what."""


@dataclass(frozen=True)
class Change:
    """One setting as GitHub has it and as it is wanted.

    Attributes:
        what: the setting's name as printed, e.g. ``ruleset 'main'``.
        current: GitHub's value, restricted to the keys that are wanted; None when it is missing.
        wanted: the wanted value.
    """

    what: str
    current: Any
    wanted: Any

    @property
    def needed(self) -> bool:
        """Whether GitHub's value differs from the wanted one."""
        return self.current != self.wanted

    def diff(self) -> str:
        """A unified diff of GitHub's value against the wanted one (JSON, keys sorted)."""

        def lines(value: Any) -> list[str]:
            if value is None:
                return []
            return json.dumps(value, indent=2, sort_keys=True).splitlines(keepends=True)

        return "".join(
            difflib.unified_diff(
                lines(self.current), lines(self.wanted), "GitHub now", "wanted", n=2
            )
        )


# --- pure core ----------------------------------------------------------------------------------


def repository_from_remote(url: str) -> str:
    """``owner/name`` of a GitHub remote URL (https, ssh or scp-like form).

    Raises:
        SettingsError: the URL is not one of a GitHub repository.
    """
    found = re.fullmatch(
        r"(?:https?://(?:[^@/]+@)?[^/]+/|ssh://git@[^/]+/|git@[^:]+:)"
        r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?",
        url.strip(),
    )
    if not found:
        raise SettingsError(
            f"the origin remote {url!r} is not a GitHub repository's URL: "
            "run with REPOSITORY=owner/name"
        )
    return f"{found.group(1)}/{found.group(2)}"


def check_repository(repository: str) -> str:
    """``repository`` if it reads ``owner/name``.

    Raises:
        SettingsError: it does not.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
        raise SettingsError(f"REPOSITORY={repository!r}: give it as owner/name")
    return repository


def token_from(environ: Mapping[str, str]) -> str:
    """The API token: ``GITHUB_TOKEN``, else ``GH_TOKEN``.

    Raises:
        SettingsError: neither is set; the message says which permissions the token needs.
    """
    token = environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN")
    if not token:
        raise SettingsError(f"set GITHUB_TOKEN (or GH_TOKEN) to {SCOPES}")
    return token


def _sort_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("type", item.get("context", json.dumps(item, sort_keys=True))))
    return json.dumps(item, sort_keys=True)


def normalized(value: Any) -> Any:
    """``value`` with lists of rules or checks sorted, so that their order does not count."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((normalized(v) for v in value), key=_sort_key)
    return value


def projected(current: Any, wanted: Any) -> Any:
    """``current`` restricted to the keys ``wanted`` sets, recursively.

    GitHub answers with more than it was sent (ids, links, defaults of newer parameters); those
    are not differences. A list item of ``current`` that ``wanted`` lacks (a rule added by hand)
    is kept whole: applying removes it, so it is a difference.
    """
    if isinstance(current, dict) and isinstance(wanted, dict):
        return {k: projected(current[k], v) for k, v in wanted.items() if k in current}
    if isinstance(current, list) and isinstance(wanted, list):
        by_key = {_sort_key(w): w for w in wanted}
        return normalized(
            [projected(c, by_key[_sort_key(c)]) if _sort_key(c) in by_key else c for c in current]
        )
    return current


def ruleset_change(current: dict[str, Any] | None, wanted: dict[str, Any]) -> Change:
    """The change that makes GitHub's ruleset (None: none of that name) the wanted one."""
    shown = None if current is None else projected(current, wanted)
    return Change(f"ruleset {wanted['name']!r}", shown, normalized(wanted))


def permissions_change(current: dict[str, Any], wanted: dict[str, Any]) -> Change:
    """The change that makes the Actions workflow permissions the wanted ones."""
    return Change("Actions workflow permissions", projected(current, wanted), wanted)


def load_ruleset(path: Path) -> dict[str, Any]:
    """The ruleset in ``path`` (GitHub's REST format), checked for what applying it needs.

    Raises:
        SettingsError: the file is missing, is not JSON, or lacks a name, target, enforcement
            or rules.
    """
    try:
        ruleset = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such ruleset file") from None
    except ValueError as error:
        raise SettingsError(f"{path}: not JSON ({error})") from None
    needed = ("name", "target", "enforcement", "rules")
    missing = [k for k in needed if k not in ruleset] if isinstance(ruleset, dict) else needed
    if missing:
        raise SettingsError(
            f"{path}: a ruleset is an object with {', '.join(missing)}; see "
            "https://docs.github.com/rest/repos/rules#create-a-repository-ruleset"
        )
    return ruleset


# --- the API ------------------------------------------------------------------------------------


def api(base: str, token: str) -> Request:
    """A function ``(method, path, body) -> JSON answer`` for the REST API at ``base``.

    Raises:
        SettingsError: ``base`` is not https (loopback aside): the token goes with every request.
            The returned function raises it when GitHub refuses, saying which token is needed.
    """
    address = urllib.parse.urlsplit(base)
    if address.scheme != "https" and not (
        address.scheme == "http" and address.hostname in {"127.0.0.1", "::1", "localhost"}
    ):
        raise SettingsError(
            f"GITHUB_API_URL must be an https:// address, got {base!r}: the token goes with it"
        )

    def request(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        sent = urllib.request.Request(  # noqa: S310 (scheme checked above)
            base.rstrip("/") + path,
            data=data,
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(sent, timeout=30) as answer:  # noqa: S310
                raw = answer.read()
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("message", "")
            except ValueError:
                message = ""
            hint = {
                401: "the token is not valid (expired or mistyped)",
                403: f"the token may not do this: use {SCOPES}",
                404: f"no such repository, or the token cannot see it: use {SCOPES}",
                409: "the organisation's Actions policy sets this: ask an organisation owner",
            }.get(error.code, "")
            raise SettingsError(
                f"{method} {path}: GitHub answered {error.code} {message!r}"
                + (f"; {hint}" if hint else "")
            ) from None
        except urllib.error.URLError as error:
            raise SettingsError(
                f"cannot reach {base} ({error.reason}): check GITHUB_API_URL"
            ) from None
        return json.loads(raw) if raw else None

    return request


def find_ruleset(request: Request, repository: str, name: str) -> dict[str, Any] | None:
    """The repository's own ruleset called ``name`` (full, with its rules), or None."""
    page = 1
    while True:
        listed = request("GET", f"/repos/{repository}/rulesets?per_page=100&page={page}", None)
        for summary in listed:
            if summary.get("name") == name and summary.get("source_type", "Repository") == (
                "Repository"
            ):
                found: dict[str, Any] = request(
                    "GET", f"/repos/{repository}/rulesets/{summary['id']}", None
                )
                return found
        if len(listed) < 100:
            return None
        page += 1


def ruleset_write(
    request: Request, repository: str, ruleset: dict[str, Any]
) -> tuple[Change, Callable[[], Any]]:
    """The change one ruleset needs, and the call that makes it (create, or update in place)."""
    current = find_ruleset(request, repository, ruleset["name"])
    rulesets = f"/repos/{repository}/rulesets"
    return (
        ruleset_change(current, ruleset),
        lambda: (
            request("POST", rulesets, ruleset)
            if current is None
            else request("PUT", f"{rulesets}/{current['id']}", ruleset)
        ),
    )


def settle(
    request: Request, repository: str, rulesets: Sequence[dict[str, Any]], dry_run: bool
) -> list[str]:
    """Bring the rulesets and the Actions permissions to what is wanted; the lines to print.

    With ``dry_run`` nothing is written: the lines say what would change, with a diff.
    """
    permissions = f"/repos/{repository}/actions/permissions/workflow"
    writes = [ruleset_write(request, repository, ruleset) for ruleset in rulesets] + [
        (
            permissions_change(request("GET", permissions, None), WORKFLOW_PERMISSIONS),
            lambda: request("PUT", permissions, WORKFLOW_PERMISSIONS),
        )
    ]
    lines = []
    for change, write in writes:
        if not change.needed:
            lines.append(f"{change.what}: unchanged")
            continue
        verb = "create" if change.current is None else "update"
        if not dry_run:
            write()
        done = f"would {verb}" if dry_run else f"{verb}d"
        lines.append(f"{change.what}: {done}\n{change.diff()}")
    if not any(change.needed for change, _ in writes):
        lines.append(f"{repository}: nothing to change")
    elif dry_run:
        lines.append(f"{repository}: dry run, nothing changed")
    return lines


def origin_remote(cwd: Path) -> str:
    """The URL of the ``origin`` remote of the git repository at ``cwd``.

    Raises:
        SettingsError: there is none.
    """
    done = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SettingsError("no origin remote: run with REPOSITORY=owner/name")
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Apply (or, with ``--dry-run``, show) the repository's GitHub settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ruleset",
        type=Path,
        action="append",
        required=True,
        help="a ruleset's JSON file (repeat for each)",
    )
    parser.add_argument("--repository", default="", help="owner/name (default: the origin remote)")
    parser.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        rulesets = [load_ruleset(path) for path in args.ruleset]
        token = token_from(environ)
        repository = check_repository(
            args.repository or repository_from_remote(origin_remote(Path.cwd()))
        )
        request = api(environ.get("GITHUB_API_URL") or DEFAULT_API, token)
        for line in settle(request, repository, rulesets, args.dry_run):
            print(line.rstrip("\n"))
    except SettingsError as error:
        print(f"github-settings: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
