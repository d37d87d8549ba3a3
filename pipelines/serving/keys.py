"""API keys: the key file, the constant-time check and the ASGI middleware that asks for a key.

With ``MODEL_API_KEYS_FILE`` set, ``/predict``, ``/explain`` and ``/card`` answer only requests
with ``Authorization: Bearer <key>`` for a key whose SHA-256 digest is in the file; anything
else gets 401 with ``WWW-Authenticate: Bearer``. Probes and ``/metrics`` stay open (the
NetworkPolicy guards them). Unset, nothing is checked and nothing is added to a request.

The file holds one SHA-256 hex digest per line, optionally followed by a space and the key's
name (``[A-Za-z0-9._-]``, at most 64 characters; requests are counted per name, never per key),
and ``#`` comments and blank lines::

    # team-a's key since 2026-03
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 team-a

Several lines are several valid keys: rotation adds the new key's line, moves the clients,
then removes the old line. The file is checked for a change (its inode, size and modification
time: a Kubernetes Secret volume swaps a symlink) at most once a second, by the request that
comes after the second is up, and read again when it changed. A file that cannot be read or
has a bad line stops the service from starting (the message names the file and line); a bad
change while serving keeps the keys read last and logs the error each time the file changes,
so a typo never opens the service nor shuts every client out.

``python -m pipelines.serving.keys NAME [--file FILE]`` (``make api-key``) makes a key.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.io import PipelineError
from pipelines.serving import names
from pipelines.serving.http import API_KEY_SCOPE

ENVIRONMENT = "MODEL_API_KEYS_FILE"
PROTECTED = ("/predict", "/explain", "/card")
# The key label of a request: a key's name, or one of these (or "" when keys are off)
NO_KEY, UNKNOWN_KEY, UNNAMED_KEY = names.KEY_NONE, names.KEY_UNKNOWN, names.KEY_UNNAMED
RESERVED = frozenset({NO_KEY, UNKNOWN_KEY})
CHECK_SECONDS = 1.0  # the file is stat()ed at most this often
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
# RFC 6750's b64token, with a bound: nothing longer is hashed
TOKEN = re.compile(rb"^[A-Za-z0-9._~+/-]{1,512}=*$")
LOG = logging.getLogger(__name__)


def digest(key: str | bytes) -> str:
    """The SHA-256 hex digest of a key, as the key file holds it."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def parse(text: str, source: str) -> tuple[tuple[bytes, str], ...]:
    """The ``(digest bytes, name)`` entries of a key file's text.

    Raises:
        PipelineError: A line is not a digest with an optional name, a digest is listed twice,
            a name is reserved, or the file holds no digest; the message names ``source`` and
            the line, never a digest.
    """
    entries: list[tuple[bytes, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if not content or content.startswith("#"):
            continue
        parts = content.split()
        where = f"{source}, line {number}"
        if len(parts) > 2 or not DIGEST.match(parts[0].lower()):
            raise PipelineError(
                f"{where}: expected a SHA-256 hex digest (64 hex digits) and an optional name; "
                "make a key and its line with `make api-key NAME=<name>`"
            )
        name = parts[1] if len(parts) == 2 else UNNAMED_KEY
        if not NAME.match(name) or name in RESERVED:
            raise PipelineError(
                f"{where}: the name must be 1-64 of A-Z a-z 0-9 . _ - and not "
                f"{' or '.join(sorted(RESERVED))}"
            )
        hexdigest = parts[0].lower()
        if hexdigest in seen:
            raise PipelineError(f"{where}: this digest is already listed on an earlier line")
        seen.add(hexdigest)
        entries.append((bytes.fromhex(hexdigest), name))
    if not entries:
        raise PipelineError(
            f"{source} holds no key digest: add a line per key (`make api-key NAME=<name>`)"
        )
    return tuple(entries)


@dataclass(frozen=True)
class Stamp:
    """What says a file changed: its inode, size and modification time."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        """The stamp of ``path`` now (the file a symlink points to)."""
        found = path.stat()
        return cls(found.st_ino, found.st_size, found.st_mtime_ns)


class ApiKeys:
    """The valid keys of a key file, read again when the file changes.

    Args:
        path: The key file.
        clock: Seconds, monotonic (tests pass their own).

    Raises:
        PipelineError: The file cannot be read or has a bad line.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.stamp: Stamp | None
        self.stamp, self.entries = self._read()
        self.next_check = clock() + CHECK_SECONDS
        self.reloads = 0

    @classmethod
    def from_environment(cls) -> ApiKeys | None:
        """The keys of ``MODEL_API_KEYS_FILE``, or None when it is unset or empty."""
        value = os.environ.get(ENVIRONMENT, "")
        return cls(Path(value)) if value else None

    def _read(self) -> tuple[Stamp, tuple[tuple[bytes, str], ...]]:
        try:
            stamp = Stamp.of(self.path)
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise PipelineError(f"{ENVIRONMENT}={self.path}: cannot read it: {reason}") from None
        return stamp, parse(text, f"{ENVIRONMENT}={self.path}")

    def refresh(self) -> None:
        """Read the file again if it changed since it was read; keep the keys if it is bad."""
        try:
            stamp = Stamp.of(self.path)
        except OSError:
            stamp = None
        if stamp == self.stamp:
            return
        try:
            self.stamp, self.entries = self._read()
        except PipelineError as error:
            self.stamp = stamp  # logged once per change, not once a second
            LOG.error("API keys not reloaded, the keys read last stay valid: %s", error)
            return
        self.reloads += 1
        LOG.info("API keys reloaded from %s: %d keys", self.path, len(self.entries))

    def name(self, key: bytes) -> str | None:
        """The name of a key if it is valid, else None.

        Every digest is compared, each in constant time, so the time taken says nothing of
        which digest, if any, matched.
        """
        now = self.clock()
        if now >= self.next_check:
            self.next_check = now + CHECK_SECONDS
            self.refresh()
        presented = hashlib.sha256(key).digest()
        found = None
        for stored, name in self.entries:
            if hmac.compare_digest(stored, presented):  # no break: every entry, every time
                found = name
        return found


def bearer(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header.

    b"" for a malformed token, None without a Bearer header.
    """
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            token = token.strip()
            return token if TOKEN.match(token) else b""
    return None


NO_KEY_ERROR = (
    "this service needs an API key: send it in the header Authorization: Bearer <key> "
    "(ask the model's owners for one)"
)
BAD_KEY_ERROR = (
    "the API key sent is not valid here: send Authorization: Bearer <key> with a key the "
    "model's owners gave you (a rotated-out key stops working once its line is removed)"
)


class RequireKey:
    """ASGI middleware: the protected paths answer only requests with a valid key.

    It writes the request's key label (the key's name, ``none`` or ``unknown``) to the scope's
    ``API_KEY_SCOPE`` entry, where :class:`pipelines.serving.http.RequestObserver` reads it to count
    requests per key.
    """

    def __init__(self, app: Any, keys: ApiKeys, paths: Sequence[str] = PROTECTED) -> None:
        self.app = app
        self.keys = keys
        self.paths = frozenset(paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer 401 to a request of a protected path without a valid key; pass the rest on."""
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        token = bearer(scope["headers"])
        name = self.keys.name(token) if token else None
        if name is not None:
            scope[API_KEY_SCOPE] = name
            await self.app(scope, receive, send)
            return
        scope[API_KEY_SCOPE] = NO_KEY if token is None else UNKNOWN_KEY
        await _unauthorized(send, NO_KEY_ERROR if token is None else BAD_KEY_ERROR, token)


async def _unauthorized(send: Any, error: str, token: bytes | None) -> None:
    body = json.dumps({"error": error}).encode()
    challenge = b'Bearer realm="model"'
    if token is not None:  # RFC 6750: a key was sent and is not good
        challenge += b', error="invalid_token"'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def new_key() -> str:
    """A new random key: 32 bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def main(argv: Sequence[str] | None = None) -> int:
    """Make a key: print it once, and its digest line (appended to ``--file`` when given)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("name", help="the key's name: who uses it (A-Z a-z 0-9 . _ -)")
    parser.add_argument("--file", type=Path, help="the key file to append the digest line to")
    args = parser.parse_args(argv)
    if not NAME.match(args.name) or args.name in RESERVED:
        parser.error(f"NAME={args.name!r}: 1-64 of A-Z a-z 0-9 . _ - and not none or unknown")
    key = new_key()
    line = f"{digest(key)} {args.name}\n"
    if args.file is not None:
        existing = args.file.read_text() if args.file.exists() else ""
        if existing and not existing.endswith("\n"):
            line = "\n" + line
        with args.file.open("a") as sink:
            sink.write(line)
        args.file.chmod(0o600)
        where = f"its digest line is appended to {args.file}"
    else:
        where = f"add this line to the key file (MODEL_API_KEYS_FILE):\n  {line.strip()}"
    print(key)
    print(
        f"the API key {args.name!r} is on the line above and is shown only now: give it to its "
        f"client and keep it out of git; {where}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
