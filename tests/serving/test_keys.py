"""API keys: the key file, the constant-time check, the 401s and the reload, at the ASGI level."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.io import PipelineError
from pipelines.serving import http, keys

OLD, NEW, THIRD = "old-key-" + "a" * 35, "new-key-" + "b" * 35, "third-key-" + "c" * 33


def key_file(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def two_keys(tmp_path: Path, clock: Clock) -> keys.ApiKeys:
    """A key file in the middle of a rotation: the old key and the new one both valid."""
    path = key_file(
        tmp_path / "keys",
        "# team-a rotates",
        f"{keys.digest(OLD)} team-a-2025",
        "",
        f"{keys.digest(NEW).upper()} team-a-2026",
    )
    return keys.ApiKeys(path, clock=clock)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def call(
    middleware: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes, dict[str, Any]]:
    """One GET through ``middleware``: status, headers, body and the scope it left."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}
    asyncio.run(middleware(scope, None, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"], scope


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


# --- the file ----------------------------------------------------------------------------------


def test_the_file_holds_digests_with_optional_names_comments_and_blank_lines() -> None:
    text = f"# a comment\n\n{keys.digest(OLD)} team-a\n  {keys.digest(NEW)}  \n"
    entries = keys.parse(text, "keys.txt")
    assert entries == (
        (bytes.fromhex(keys.digest(OLD)), "team-a"),
        (bytes.fromhex(keys.digest(NEW)), keys.UNNAMED_KEY),
    )


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not-a-digest team-a", "SHA-256 hex digest"),
        (f"{keys.digest(OLD)[:-1]} team-a", "SHA-256 hex digest"),
        (f"{keys.digest(OLD)} team a", "SHA-256 hex digest"),
        (f"{keys.digest(OLD)} none", "the name must be"),
        (f"{keys.digest(OLD)} unknown", "the name must be"),
        (f"{keys.digest(OLD)} team/a", "the name must be"),
        (OLD, "SHA-256 hex digest"),  # a key pasted instead of its digest
    ],
)
def test_a_bad_line_is_refused_naming_the_file_and_line_but_never_the_line(
    line: str, says: str
) -> None:
    with pytest.raises(PipelineError, match=says) as refused:
        keys.parse(f"# keys\n{keys.digest(THIRD)} ok\n{line}\n", "/etc/model/keys")
    assert "/etc/model/keys, line 3" in str(refused.value)
    assert OLD not in str(refused.value)
    assert keys.digest(OLD) not in str(refused.value)


def test_a_digest_listed_twice_or_a_file_without_digests_is_refused() -> None:
    with pytest.raises(PipelineError, match="line 2: this digest is already listed"):
        keys.parse(f"{keys.digest(OLD)} a\n{keys.digest(OLD)} b\n", "keys")
    with pytest.raises(PipelineError, match="keys holds no key digest"):
        keys.parse("# only a comment\n\n", "keys")


def test_a_missing_file_stops_the_service_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=f"MODEL_API_KEYS_FILE={tmp_path}/gone: cannot read"):
        keys.ApiKeys(tmp_path / "gone")


def test_keys_are_off_unless_the_variable_is_set(
    monkeypatch: pytest.MonkeyPatch, two_keys: keys.ApiKeys
) -> None:
    monkeypatch.delenv(keys.ENVIRONMENT, raising=False)
    assert keys.ApiKeys.from_environment() is None
    monkeypatch.setenv(keys.ENVIRONMENT, str(two_keys.path))
    found = keys.ApiKeys.from_environment()
    assert found is not None
    assert [name for _, name in found.entries] == ["team-a-2025", "team-a-2026"]


# --- the check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ([], b'Bearer realm="model"'),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], b'Bearer realm="model"'),
        (auth("not a token"), b'Bearer realm="model", error="invalid_token"'),
        (auth(""), b'Bearer realm="model", error="invalid_token"'),
        (auth("x" * 600), b'Bearer realm="model", error="invalid_token"'),
        (auth(THIRD), b'Bearer realm="model", error="invalid_token"'),
        (auth(OLD[:-1]), b'Bearer realm="model", error="invalid_token"'),
    ],
    ids=["none", "basic", "malformed", "empty", "too-long", "unknown", "almost"],
)
@pytest.mark.parametrize("path", keys.PROTECTED)
def test_a_protected_path_without_a_valid_key_gets_401_saying_what_to_do(
    two_keys: keys.ApiKeys, headers: list[tuple[bytes, bytes]], challenge: bytes, path: str
) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await _ok(scope, receive, send)

    status, sent, body, scope = call(keys.RequireKey(app, two_keys), path, headers)
    assert (status, reached) == (401, [])
    assert sent[b"www-authenticate"].startswith(challenge)
    assert sent[b"content-type"] == b"application/json"
    error = json.loads(body)["error"]
    assert "Authorization: Bearer <key>" in error
    for secret in (OLD, NEW, keys.digest(OLD), keys.digest(NEW), "team-a"):
        assert secret not in error  # neither which keys exist nor their names
    assert scope[http.API_KEY_SCOPE] == ("none" if b"invalid_token" not in challenge else "unknown")


def test_both_keys_of_a_rotation_pass_and_are_told_apart_by_name(
    two_keys: keys.ApiKeys,
) -> None:
    middleware = keys.RequireKey(_ok, two_keys)
    for key, name in ((OLD, "team-a-2025"), (NEW, "team-a-2026")):
        status, _, _, scope = call(middleware, "/predict", auth(key))
        assert (status, scope[http.API_KEY_SCOPE]) == (200, name)
    status, _, _, _ = call(middleware, "/predict", [(b"Authorization", b"bearer  " + NEW.encode())])
    assert status == 200  # the scheme is case-insensitive (RFC 7235)


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/healthz", "/docs.json"])
def test_probes_and_metrics_stay_open(two_keys: keys.ApiKeys, path: str) -> None:
    status, _, _, scope = call(keys.RequireKey(_ok, two_keys), path)
    assert status == 200
    assert http.API_KEY_SCOPE not in scope


def test_every_digest_is_compared_in_constant_time_without_stopping_at_a_match(
    two_keys: keys.ApiKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = keys.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", counting)
    for key in (OLD, NEW, THIRD):  # the first entry, the last, none
        compared.clear()
        two_keys.name(key.encode())
        assert len(compared) == len(two_keys.entries)
        assert {len(a) for pair in compared for a in pair} == {32}  # digests, not the keys


def test_the_file_is_read_again_when_it_changes_and_stat_at_most_once_a_second(
    two_keys: keys.ApiKeys, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats: list[Path] = []
    real = keys.Stamp.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[keys.Stamp], path: Path) -> keys.Stamp:
        stats.append(path)
        return real(cls, path)

    monkeypatch.setattr(keys.Stamp, "of", classmethod(counting))
    middleware = keys.RequireKey(_ok, two_keys)
    # the rotation ends: the old key's line goes, a third key comes
    replacement = two_keys.path.with_name("keys.new")
    key_file(replacement, f"{keys.digest(NEW)} team-a-2026", f"{keys.digest(THIRD)} team-b")
    replacement.replace(two_keys.path)  # as a Secret volume swaps its files
    for _ in range(100):
        assert call(middleware, "/predict", auth(OLD))[0] == 200  # within the second
    assert stats == []
    clock.now += keys.CHECK_SECONDS
    assert call(middleware, "/predict", auth(OLD))[0] == 401
    assert call(middleware, "/predict", auth(THIRD))[3][http.API_KEY_SCOPE] == "team-b"
    assert call(middleware, "/predict", auth(NEW))[0] == 200
    assert (len(stats), two_keys.reloads) == (2, 1)  # one stat to see the change, one to read


def test_a_bad_change_keeps_the_keys_read_last_and_says_so_once(
    two_keys: keys.ApiKeys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    two_keys.path.write_text(f"{keys.digest(THIRD)} team-b\n{NEW}\n")  # a key pasted as a line
    for _ in range(3):
        clock.now += keys.CHECK_SECONDS
        assert two_keys.name(OLD.encode()) == "team-a-2025"
        assert two_keys.name(THIRD.encode()) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "line 2" in errors[0].getMessage()
    assert str(two_keys.path) in errors[0].getMessage()
    assert NEW not in caplog.text  # the pasted key is not echoed
    two_keys.path.unlink()  # a file that goes away also keeps the keys
    clock.now += keys.CHECK_SECONDS
    assert two_keys.name(NEW.encode()) == "team-a-2026"
    key_file(two_keys.path, f"{keys.digest(THIRD)} team-b")
    clock.now += keys.CHECK_SECONDS
    assert two_keys.name(THIRD.encode()) == "team-b"
    assert two_keys.name(NEW.encode()) is None


def test_requests_are_counted_per_key_name_and_no_key_reaches_a_log_or_a_metric(
    two_keys: keys.ApiKeys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The key check inside the request observer (as BentoML orders them): the observer hears
    the key's name, ``none`` or ``unknown``; nothing logged holds a key or its digest."""
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, int, float, str]] = []
    http.RequestObserver.routes = frozenset({"/predict"})
    http.RequestObserver.observe = lambda *args: seen.append(args)
    try:
        observer = http.RequestObserver(keys.RequireKey(_ok, two_keys), timeout=5)
        for headers in ([], auth(THIRD), auth(OLD), auth(NEW), auth("bad key")):
            call(observer, "/predict", headers)
        clock.now += keys.CHECK_SECONDS
        two_keys.path.write_text(f"{keys.digest(NEW)} team-a-2026\n")
        call(observer, "/predict", auth(NEW))
    finally:
        http.RequestObserver.routes = frozenset()
        http.RequestObserver.observe = None
    assert [(status, key) for _, status, _, key in seen] == [
        (401, "none"),
        (401, "unknown"),
        (200, "team-a-2025"),
        (200, "team-a-2026"),
        (401, "unknown"),
        (200, "team-a-2026"),
    ]
    assert "reloaded" in caplog.text
    for secret in (OLD, NEW, THIRD, keys.digest(OLD), keys.digest(NEW), keys.digest(THIRD)):
        assert secret not in caplog.text
        assert all(secret not in str(observed) for observed in seen)


# --- making a key ------------------------------------------------------------------------------


def test_make_api_key_prints_a_new_key_once_and_appends_its_digest_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{keys.digest(OLD)} team-a")  # no newline at the end
    assert keys.main(["team-b", "--file", str(path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert len(key) >= 43
    assert key not in err
    assert f"appended to {path}" in err
    entries = keys.ApiKeys(path).entries
    assert [name for _, name in entries] == ["team-a", "team-b"]
    assert keys.ApiKeys(path).name(key.encode()) == "team-b"
    assert path.stat().st_mode & 0o077 == 0
    assert keys.main(["team-c"]) == 0
    out, err = capsys.readouterr()
    assert f"{keys.digest(out.strip())} team-c" in err
    with pytest.raises(SystemExit):
        keys.main(["unknown"])
