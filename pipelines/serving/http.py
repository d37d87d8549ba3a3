"""The HTTP guard of the service: size and media-type limits, readable 400s, a request timeout."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pipelines.core.io import PipelineError

if TYPE_CHECKING:
    pass


Scope = dict[str, Any]
Message = dict[str, Any]
LISTED_PROBLEMS = 50  # a 1000-record batch can hold 20,000 problems: the first ones suffice
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
# Work a handler leaves for after its response's last byte (:func:`after_response`)
AFTER_RESPONSE: ContextVar[list[Callable[[], object]] | None] = ContextVar(
    "after_response", default=None
)
# The scope entry where pipelines.serving.keys.RequireKey leaves the name of the request's key
API_KEY_SCOPE = "model.api_key"
CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/-]{1,128}$")
LOG = logging.getLogger(__name__)


def explain_errors(body: bytes) -> bytes | None:
    """Rewrite BentoML's pydantic 400 body into one that names each record and field.

    ``{"detail": [{"loc": ["records", 3, "age"], "msg": ...}, ...]}`` becomes
    ``{"error": ..., "detail": "records.3.age: ...; ...", "errors": [{"field":
    "records.3.age", "record": 3, "message": ..., "type": ...}, ...]}``. ``detail`` is a
    string, as the service's OpenAPI document declares it. Returns None for any other body.
    """
    try:
        document = json.loads(body)
        problems = [
            {
                "field": ".".join(str(part) for part in problem["loc"]) or "body",
                **({"record": problem["loc"][1]} if _names_record(problem["loc"]) else {}),
                "message": problem["msg"],
                "type": problem["type"],
            }
            for problem in document["detail"]
        ]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    count = len(problems)
    problems = problems[:LISTED_PROBLEMS]
    detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    first = f"{problems[0]['field']}: {problems[0]['message']}" if problems else "no detail"
    more = f" (and {count - 1} more, listed in 'errors')" if count > 1 else ""
    error = (
        f'invalid request: {first}{more}. Send {{"records": [...]}} with each record holding '
        "exactly the fields of the schema, with their types and ranges (see /docs.json)."
    )
    if count > len(problems):
        detail += f"; ... {count - len(problems)} more"
    return json.dumps({"error": error, "detail": detail, "errors": problems}).encode()


def _names_record(loc: Sequence[Any]) -> bool:
    return len(loc) >= 2 and loc[0] == "records" and isinstance(loc[1], int)


class RequestGuard:
    """ASGI middleware for the API routes: JSON only (415), bounded size (413), readable 400s.

    The body is read here, up to ``max_body_bytes``, before the service parses anything, so an
    oversized request costs no more than the limit whether or not it declares its length.
    Other routes and methods pass through untouched (BentoML answers them, e.g. 405).
    """

    def __init__(self, app: Any, max_body_bytes: int, routes: Sequence[str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Check a request to an API route, then pass it on with a rewriting ``send``."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type not in (b"application/json", b""):
            await self._not_json(send, media_type.decode("latin-1"))
            return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        if body and not media_type:  # an empty body has no type; it gets the 400 it deserves
            await self._not_json(send, "none")
            return
        await self.app(scope, _replay(bytes(body), receive), _readable_errors(send))

    async def _not_json(self, send: Any, media_type: str) -> None:
        await _reply(
            send,
            415,
            f"unsupported content type {media_type}: send a JSON body with "
            "Content-Type: application/json",
        )

    async def _too_large(self, send: Any) -> None:
        await _reply(
            send,
            413,
            f"request body larger than {self.max_body_bytes} bytes (serve.max_body_bytes): "
            "split the records into smaller requests",
        )


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return dict(await receive())
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _readable_errors(send: Any) -> Any:
    held: Message | None = None
    chunks: list[bytes] = []

    async def rewriting_send(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        body = explain_errors(body) or body
        headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return rewriting_send


class RequestTimeout:
    """``traffic.timeout`` as BentoML answers it (504), with the timer cancelled in time.

    BentoML 1.4's ``TimeoutMiddleware`` schedules a ``loop.call_later(timeout)`` per request and
    never cancels it. The timer holds the request's context (its OpenTelemetry span, lists,
    locks) for ``timeout`` seconds and, under uvloop, in a reference cycle after that: every
    request's objects reach the collector's oldest generation, whose full passes then stall the
    worker for 20-150 ms (measured with 10 s at 500 requests/s: p99 at 8 clients 50-60 ms and
    growing memory between passes). This one cancels its timer when the response starts,
    which is when BentoML's stops counting too; :func:`install_request_timeout` puts it in
    BentoML's place.
    """

    replaces: type  # BentoML's class, once install_request_timeout has run

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Pass the request on; answer 504 if its response has not started within the timeout."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def starting_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # as in BentoML's: a response under way may go on
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, starting_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            await _reply(send, 504, f"Not able to process the request in {self.timeout} seconds")


class RequestObserver:
    """The outermost middleware: a request id and every API request's outcome and duration.

    It sits where BentoML puts its timeout, outside the concurrency limit and the request
    guard, so it sees every answer an API route gives: 200s, the guard's 413 and 415, the
    schema's 400s, the limit's 429 and the timeout's 504 (:class:`RequestTimeout`, which it
    wraps). Each request gets an id, the client's ``X-Request-ID`` when it sends a sane one,
    else a random one, returned in the ``X-Request-ID`` response header and readable by the
    handler through :data:`REQUEST_ID`. ``observe(route, status, seconds, key)`` is called
    once per request, after its last byte; ``key`` is the name the API key check left in the
    scope (:data:`API_KEY_SCOPE`), or "" when no key was checked (keys off, or a refusal
    before the check, such as a 429). Then the work the handler left with
    :func:`after_response` runs: the client has its whole answer by then.
    """

    routes: frozenset[str] = frozenset()
    observe: Callable[[str, int, float, str], None] | None = None

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = RequestTimeout(app, timeout)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Name the request, pass it on, and report its status and duration."""
        if scope["type"] != "http" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given.decode() if CLIENT_REQUEST_ID.match(given) else secrets.token_hex(8)
        REQUEST_ID.set(request_id)
        later: list[Callable[[], object]] = []
        AFTER_RESPONSE.set(later)
        status = 500  # what the client sees if the app fails before answering

        async def naming_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, naming_send)
        finally:
            observe = type(self).observe
            if observe is not None:
                seconds = time.perf_counter() - started
                observe(scope["path"], status, seconds, scope.get(API_KEY_SCOPE, ""))
        for job in later:
            try:
                job()
            except Exception:  # the answer is sent: nothing is left to fail but the job
                LOG.exception("work after the response failed")


def after_response(job: Callable[[], object]) -> bool:
    """Run ``job`` once the current API request's response is sent; False outside a request.

    It runs in the worker, on its event loop: the client has its answer, but the worker's next
    request waits for the job, so a job must be short (a shadow model's scoring).
    """
    later = AFTER_RESPONSE.get()
    if later is None:
        return False
    later.append(job)
    return True


def install_request_timeout(
    routes: Sequence[str] = (), observe: Callable[[str, int, float, str], None] | None = None
) -> type:
    """Make BentoML build its apps with :class:`RequestObserver` and :class:`RequestTimeout`.

    BentoML imports its ``TimeoutMiddleware`` from its module when it assembles an app's
    middleware, so the replacement must be in place before the service's app is built
    (importing ``pipelines.serving.service`` does it). Installing twice changes nothing.

    Args:
        routes: The API routes to name, count and time.
        observe: Called with ``(route, status, seconds, key)`` after each such request.

    Returns:
        BentoML's own class, the one replaced.

    Raises:
        PipelineError: This BentoML has no such middleware any more; the replacement would
            silently do nothing.
    """
    from bentoml._internal.server.http import traffic

    current = getattr(traffic, "TimeoutMiddleware", None)
    if current is None:
        raise PipelineError(
            "bentoml._internal.server.http.traffic.TimeoutMiddleware is gone: check whether this "
            "BentoML still holds every request for traffic.timeout seconds, then drop "
            "install_request_timeout"
        )
    RequestObserver.routes = frozenset(routes)
    RequestObserver.observe = observe
    if current is not RequestObserver:
        RequestTimeout.replaces = current
        traffic.TimeoutMiddleware = RequestObserver  # type: ignore[misc,assignment]
    return RequestTimeout.replaces


class Document:
    """ASGI middleware that answers ``GET``/``HEAD`` on one path with a document (``GET /card``).

    ``read`` is called on the first request, in the worker, once the model is in place; the bytes
    are then kept. Other methods on the path get 405; other paths pass through untouched.
    """

    def __init__(self, app: Any, path: str, media_type: str, read: Callable[[], bytes]) -> None:
        self.app = app
        self.path = path
        self.media_type = media_type.encode()
        self.read = read
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Answer the document's path; pass anything else on."""
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _reply(send, 405, f"{self.path} answers GET only")
            return
        if self.body is None:
            self.body = self.read()
        headers = [
            (b"content-type", self.media_type),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})


async def _reply(send: Any, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
