"""Starting a real server on a free port of 127.0.0.1, and the records to send it.

:func:`start` runs `bentoml serve` of the project's service as `make serve` starts it;
:func:`launch` any command that serves HTTP; :func:`import_model` imports the trained model into
a BentoML home as `make serve` does.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.model import read_threshold
from pipelines.schema import Schema
from tools.scratch import BIN, ScratchRepo

STARTUP_SECONDS = 120
# The API keys of the end-to-end session's server: the one its client sends, and the other
# of a rotation (tests/e2e/conftest.py writes their digests to the key file)
API_KEY, ROTATED_KEY = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
API_KEY_NAME, ROTATED_KEY_NAME = "tests", "tests-next"
AUTHORIZED = {"authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def records(rows: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """Raw rows as JSON request records: feature and audit columns, missing values as null.

    An audit column is optional in a request; sent, it lets the service count decisions by it.
    """
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows[list(schema.checked)].to_dict("records")
    ]


def expected_predictions(
    output: np.ndarray, schema: Schema, *, threshold: float = 0.5, half_width: float = 0.0
) -> list[dict[str, Any]]:
    """The ``/predict`` predictions the API contract gives for a model's output, per task.

    Binary: the probability and the positive label at or above ``threshold``; multiclass: the
    most probable class and each class's probability, in the schema's class order; regression:
    the prediction and ``[y - half_width, y + half_width]``.
    """
    target = schema.target
    if target.task == "regression":
        return [
            {"prediction": y, "interval": [y - half_width, y + half_width]}
            for y in np.asarray(output, dtype=np.float64).tolist()
        ]
    if target.task == "multiclass":
        classes = list(target.labels)
        return [
            {
                "label": classes[int(np.argmax(row))],
                "probabilities": {str(c): p for c, p in zip(classes, row, strict=True)},
            }
            for row in np.asarray(output, dtype=np.float64).tolist()
        ]
    (negative,) = [value for value in target.labels if value != target.positive]
    return [
        {"probability": p, "label": target.positive if p >= threshold else negative}
        for p in np.asarray(output, dtype=np.float64).tolist()
    ]


def assert_predictions_match(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], rtol: float, atol: float = 0.0
) -> None:
    """Served predictions equal the expected ones: the same keys, labels and classes in order,
    and numbers within ``rtol`` and ``atol`` (as ``numpy.testing.assert_allclose``)."""
    assert len(got) == len(expected)
    for i, (one, want) in enumerate(zip(got, expected, strict=True)):
        assert list(one) == list(want), i
        for key, value in want.items():
            answer = one[key]
            if isinstance(value, dict):  # a probability per class
                assert list(answer) == list(value), (i, key)
                answer, value = list(answer.values()), list(value.values())  # noqa: PLW2901
            if isinstance(value, float | list):
                np.testing.assert_allclose(answer, value, rtol=rtol, atol=atol, err_msg=f"{i}")
            else:
                assert answer == value, (i, key)


@dataclass
class Server:
    """A running `bentoml serve` and the project copy it serves from."""

    repo: ScratchRepo
    process: subprocess.Popen[bytes]
    url: str
    tag: str
    env: dict[str, str]
    log: Path

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful), then SIGKILL of the whole process group if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)

    def params(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.repo.path / "params.yaml").read_text()))

    def threshold(self) -> float:
        """The served binary model's decision threshold, as trained (its ``meta.json``)."""
        return read_threshold(self.repo.path / self.params()["paths"]["model"])


def start(
    repo: ScratchRepo, env: dict[str, str], tag: str, log: Path, ready: str = "/readyz"
) -> Server:
    """Start `bentoml serve` in ``repo`` and wait until ``ready`` answers 200."""
    command = [str(BIN / "bentoml"), "serve", "pipelines.serving.service:ModelService"]
    command += ["--host", "127.0.0.1", "--port", "{port}"]
    return launch(repo, command, env, tag, log, ready=ready)


def launch(
    repo: ScratchRepo, command: list[str], env: dict[str, str], tag: str, log: Path, *, ready: str
) -> Server:
    """Start ``command`` (``{port}`` is a free port) in ``repo``; wait until ``ready`` is 200."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            cwd=repo.path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every worker
        )
    server = Server(repo, process, f"http://127.0.0.1:{port}", tag, env, log)
    name = " ".join(Path(command[0]).name.split() + command[1:2])
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited {process.returncode}:\n{log.read_text()[-5000:]}")
        try:
            if httpx.get(f"{server.url}{ready}", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    pytest.fail(f"{name} not ready after {STARTUP_SECONDS} s:\n{log.read_text()[-5000:]}")


def import_model(repo: ScratchRepo, env: dict[str, str], *arguments: str) -> str:
    """``python -m pipelines.serving.store import [arguments]`` in ``repo``: the model's tag."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.serving.store", "import", *arguments],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
