"""A client of the service's ``POST /predict`` that retries what a dying worker breaks.

Standard library only, so that a caller can copy this file into its own code base::

    with PredictClient("http://127.0.0.1:3000") as client:
        answer = client.predict([{<raw feature>: value, ...}])
    answer["predictions"]

The service runs several worker processes on one listening socket. When a worker dies (killed
for memory, crashed), every connection it held is cut: the request in flight on it gets a reset
or an empty reply, and a kept-alive connection fails on its next request. The other workers go
on serving, so sending the request again, on a new connection, gets its answer. That is safe
because ``/predict`` is a pure function of the body: scoring a record twice changes nothing
(a sampled request log may hold the record twice, under two request ids).

Only connection failures are retried (:data:`RETRIED`), at once and at most ``retries`` times.
An HTTP error answer is not: a 4xx is the request's fault and would fail again; a 429 or 503
says when to come back (``Retry-After``), which is the caller's policy (:class:`ServiceError`
carries it). A timeout is not either: the request may still be running, and sending it again
would add load to a service that is already slow.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

# A reset, a broken pipe, a refused connection, an empty reply (RemoteDisconnected), an answer
# cut short (IncompleteRead): what a worker that dies does to its connections. Not TimeoutError.
RETRIED: tuple[type[Exception], ...] = (ConnectionError, http.client.HTTPException)


class ServiceError(Exception):
    """The service answered with an HTTP error status (never retried here).

    Attributes:
        status: The HTTP status.
        body: The answer's body (the service's JSON error names the record and field at fault).
        retry_after: Seconds the service asks the caller to wait (429, 503), or None.
    """

    def __init__(self, status: int, body: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


class PredictClient:
    """Calls ``/predict`` over one kept-alive connection, opening a new one after a failure.

    One client per thread (a connection carries one request at a time).

    Args:
        url: The service's base URL (``http://host:port``; https works too).
        retries: How many times a request that met a connection failure is sent again.
        timeout: Seconds to wait for the connection and for each read.
        api_key: Sent as ``Authorization: Bearer <key>`` when the service asks for keys.
    """

    def __init__(
        self, url: str, *, retries: int = 2, timeout: float = 30.0, api_key: str | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.retries = retries
        self.retried = 0  # requests sent again so far, for the caller's counts
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._connection: http.client.HTTPConnection | None = None

    def predict(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The service's answer for ``records``: ``{"predictions": [...], "model": {...}}``.

        Raises:
            ServiceError: The service answered an HTTP error.
            ConnectionError, http.client.HTTPException: Still failing after ``retries`` tries.
            TimeoutError: No answer within ``timeout`` (not retried).
        """
        return self.send("/predict", json.dumps({"records": list(records)}).encode())

    def send(self, path: str, body: bytes) -> dict[str, Any]:
        """POST a JSON ``body`` already encoded to ``path``; the decoded answer (as predict)."""
        tries = 0
        while True:
            try:
                return self._post(path, body)
            except RETRIED:
                self.close()  # the connection is broken: the next try opens a new one
                if tries >= self.retries:
                    raise
                tries += 1
                self.retried += 1

    def _post(self, path: str, body: bytes) -> dict[str, Any]:
        if self._connection is None:
            secure = self._scheme == "https"
            kind = http.client.HTTPSConnection if secure else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        self._connection.request("POST", self._prefix + path, body, self._headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            retry_after = response.getheader("Retry-After")
            raise ServiceError(
                response.status,
                data.decode(errors="replace"),
                float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return dict(json.loads(data))

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> PredictClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
