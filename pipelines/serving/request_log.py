"""The service's sampled request log: served records and their predictions, for late labels.

With ``serve.request_log`` above 0, that share of requests is written to ``paths.requests`` as
JSON lines, one line per record::

    {"id": "<request id>[/<i>]", "time": "<ISO 8601 UTC>", "model_version": "...",
     "record": {<raw feature>: value, ...}, <the record's prediction>}

The prediction is the record's entry of the ``/predict`` response, whose fields follow the
task: ``"probability"`` and ``"label"`` (binary), ``"prediction"`` and ``"interval"``
(regression), ``"label"`` and ``"probabilities"`` (multiclass).

The request id is the one returned in the ``X-Request-ID`` header; record ``i`` of a batch of more
than one gets ``<request id>/<i>``. Labels that arrive later, a CSV of ``id,label``, join on it
(``make monitor ROWS=logs/requests LABELS=labels.csv``). Each worker appends to its own file per
hour, so workers never interleave lines and old hours can be shipped or deleted whole.

BentoML's ``bentoml.monitor`` is not used: its request id is the tracing span's, empty while
tracing is off (it costs ~35% of a request), and it reconfigures the process's logging.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def sampled(rate: float) -> bool:
    """Whether this request is in a sample of ``rate`` of them (0 to 1)."""
    return rate >= 1.0 or (rate > 0.0 and random.random() < rate)  # noqa: S311


class RequestLog:
    """Appends a sample of requests to ``directory/requests-<UTC hour>-<pid>.jsonl``.

    Args:
        directory: Where the files go (created on first write).
        rate: Share of requests logged, 0 to 1.
        version: The model version written on every line.
    """

    def __init__(self, directory: Path, rate: float, version: str) -> None:
        self.directory = Path(directory)
        self.rate = rate
        self.version = version
        self._hour = ""
        self._file: IO[str] | None = None

    def sampled(self) -> bool:
        """Whether this request is one to log."""
        return sampled(self.rate)

    def write(
        self,
        request_id: str,
        records: Sequence[Mapping[str, Any]],
        predictions: Sequence[Mapping[str, Any]],
    ) -> None:
        """Write one line per record with its prediction (the response's fields, as JSON)."""
        now = time.gmtime()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", now)
        lines = []
        for i, (record, prediction) in enumerate(zip(records, predictions, strict=True)):
            line = {
                "id": request_id if len(records) == 1 else f"{request_id}/{i}",
                "time": stamp,
                "model_version": self.version,
                "record": dict(record),
                **prediction,
            }
            lines.append(json.dumps(line, separators=(",", ":")))
        self._open(time.strftime("%Y%m%d%H", now)).write("\n".join(lines) + "\n")

    def _open(self, hour: str) -> IO[str]:
        if self._file is None or hour != self._hour:
            if self._file is not None:
                self._file.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"requests-{hour}-{os.getpid()}.jsonl"
            self._file = path.open("a", encoding="utf-8", buffering=1)  # line-buffered
            self._hour = hour
        return self._file
