"""The load generator and the server handling that every serving benchmark shares.

``wrk`` (one thread, which leaves the cores to the servers) POSTs the bodies in turn from a
generated Lua script that prints its figures as one JSON line. A :class:`Server` runs on a free
port of 127.0.0.1 in its own process group: started, waited for, checked to answer like the
model, loaded (alone, or in turn with others running at once), its processes' peak memory read
from /proc, then stopped with its workers. ``benchmarks/serving.py``, ``soak.py``,
``previous.py`` and ``workers.py`` build on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.io import PipelineError
from pipelines.core.lineage import tracking_uri
from pipelines.params import Paths, RegisterParams, load_section

ROUNDS = 5  # in_turn's runs of each server, alternating, unless told otherwise
CHECKED = 20  # bodies whose answers are compared with the model's own before loading a server
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
# wrk's kinds of failed request: no connection, a broken read or write (a reset, an empty
# reply), a non-2xx answer, no answer within --timeout
WRK_ERRORS = ("connect", "read", "write", "status", "timeout")

# One request per call, bodies taken in turn; done() prints the figures as one JSON line, in
# microseconds, so nothing depends on wrk's human-readable units.
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {
%s
}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%.1f, "p99_us": %%.1f, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class BenchError(PipelineError):
    """A benchmark could not be run as specified (no load generator, a server that fails)."""


@dataclass(frozen=True)
class Load:
    """What one load run measured.

    Attributes:
        requests: Completed requests (or calls).
        seconds: How long the run lasted.
        p50_ms: Median latency.
        p99_ms: 99th-percentile latency.
        errors: Failed requests: connection errors, timeouts and non-2xx answers.
        error_kinds: The errors by wrk's kind (``WRK_ERRORS``), when wrk ran.
    """

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        """Requests (or calls) per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        """The figures, with the rate, as JSON-able numbers."""
        return {**asdict(self), "per_second": self.per_second}


# ---------------------------------------------------------------------------------------------
# The load generator


def lua_script(bodies: Sequence[str]) -> str:
    """The wrk script that POSTs ``bodies`` in turn and prints its figures as JSON."""
    if not bodies:
        raise ValueError("wrk needs at least one request body")
    for body in bodies:
        if "]==]" in body:
            raise ValueError(f"a body cannot hold the Lua string delimiter ]==]: {body[:80]}")
    return LUA % ",\n".join(f"  [==[{body}]==]" for body in bodies)


def parse_wrk(output: str) -> Load:
    """Read the figures that the script's ``done()`` printed in wrk's output.

    Raises:
        BenchError: The output has no such line (wrk failed before the end of its run).
    """
    for line in output.splitlines():
        if line.startswith("BENCH "):
            figures = json.loads(line.removeprefix("BENCH "))
            kinds = {kind: int(figures[kind]) for kind in WRK_ERRORS}
            return Load(
                requests=int(figures["requests"]),
                seconds=figures["duration_us"] / 1e6,
                p50_ms=figures["p50_us"] / 1e3,
                p99_ms=figures["p99_us"] / 1e3,
                errors=sum(kinds.values()),
                error_kinds=kinds,
            )
    tail = " | ".join(output.strip().splitlines()[-3:]) or "no output"
    raise BenchError(f"wrk printed no figures: {tail}")


def ensure_wrk() -> str:
    """The path of wrk; installed from Debian when missing and allowed to.

    Raises:
        BenchError: wrk is missing and cannot be installed here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk)...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("the load generator wrk is not installed: `sudo apt-get install -y wrk`")


def run_wrk(wrk: str, url: str, script: Path, clients: int, seconds: float) -> Load:
    """Load ``url`` with ``clients`` connections for ``seconds`` from one wrk thread."""
    command = [wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "--latency"]
    done = subprocess.run(
        [*command, "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    return parse_wrk(done.stdout + done.stderr)


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass(frozen=True)
class Server:
    """How to start one server and talk to it.

    Attributes:
        key: Short name in the report and the JSON file.
        title: What it is, in the table.
        command: The command line; ``{port}`` is replaced by the port.
        path: Where requests are POSTed.
        ready: A GET path that answers 200 once the model is loaded.
        bodies: The request bodies.
        expected: The model's output each body must be answered with (same order): a binary
            model's probability, a regression's value, a multiclass model's probabilities.
        answer: Reads that output out of a response document.
        env: Environment variables of this server only.
    """

    key: str
    title: str
    command: list[str]
    path: str
    ready: str
    bodies: list[str]
    expected: list[list[float]]
    answer: Callable[[dict[str, Any]], list[float]]
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int:
    """The status of a GET of ``url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own server)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _post(url: str, body: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (our own server)
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; give its workers (same group) a moment, then make sure.
        time.sleep(0.5)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def status_kib(status: str, key: str) -> int:
    """A figure in KiB (``VmHWM``, ``VmRSS``) from the text of ``/proc/<pid>/status``.

    Raises:
        ValueError: The text has no such line (a kernel thread, or not a status file).
    """
    for line in status.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise ValueError(f"no {key} line in the process status")


def peak_rss_kib(status: str) -> int:
    """A process's peak resident set (``VmHWM``) in KiB, from the text of ``/proc/<pid>/status``.

    Raises:
        ValueError: The text has no ``VmHWM`` line (a kernel thread, or not a status file).
    """
    return status_kib(status, "VmHWM")


def tree_roles(root: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """Process ``root`` and every process descending from it, each with its role.

    The role is ``worker`` for a BentoML API worker (``_bentoml_impl.worker``, which runs in a
    process group of its own), ``arbiter`` for the ``bentoml serve`` process that starts and
    watches them, else the program's name (make, uv...). Processes gone meanwhile are left out.
    """
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                # Field 4 is the parent; the command name (field 2) may hold spaces.
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rpartition(")")[2].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    roles = {}
    for pid in sorted(tree):
        try:
            command = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        program = Path(command.strip().split(" ")[0]).name
        if "_bentoml_impl.worker" in command:
            roles[pid] = "worker"
        elif "bentoml serve" in command and program.startswith("python"):
            roles[pid] = "arbiter"  # BentoML's process that starts and watches the workers
        elif program:
            roles[pid] = program
    return roles


def tree_peaks(root: int, proc: Path = Path("/proc")) -> list[dict[str, Any]]:
    """The peak RSS of process ``root`` and of every process descending from it, largest first.

    Each entry has ``pid``, ``peak_mib`` and ``role`` (:func:`tree_roles`). Read before the
    server stops: the kernel keeps ``VmHWM`` only while the process lives.
    """
    peaks = []
    for pid, role in tree_roles(root, proc).items():
        try:
            peak = peak_rss_kib((proc / str(pid) / "status").read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile, or a kernel thread
        peaks.append({"pid": pid, "role": role, "peak_mib": round(peak / 1024, 1)})
    return sorted(peaks, key=lambda p: -p["peak_mib"])


@dataclass(frozen=True)
class Running:
    """A started server: its base URL and the id of the process started (its process group)."""

    base: str
    pid: int


@contextmanager
def running(
    server: Server, log: Path, env: dict[str, str], cwd: Path | None = None
) -> Iterator[Running]:
    """Start ``server`` on a free port in its own process group; yield where it runs; stop it.

    Raises:
        BenchError: It exited or did not become ready within ``START_TIMEOUT_S``; the message
            ends with the tail of its log.
    """
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in server.command]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while http_status(base + server.ready) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
                state = "exited" if process.poll() is not None else "was not ready in time"
                raise BenchError(f"{server.title} {state} ({' '.join(command)}): {tail}")
            time.sleep(0.5)
        yield Running(base, process.pid)
    finally:
        _stop(process)


def check_answers(server: Server, base: str) -> None:
    """Compare the first answers with the model's own, so every server does the same job.

    A server without ``expected`` answers (another release's, with a model of its own) must
    still answer each body.

    Raises:
        BenchError: A request failed or an answer differs from the model's.
    """
    expected_answers: list[list[float] | None] = [*server.expected] or [None] * len(server.bodies)
    for body, expected in list(zip(server.bodies, expected_answers, strict=True))[:CHECKED]:
        try:
            got = server.answer(_post(base + server.path, body))
        except (OSError, KeyError, IndexError, ValueError) as error:
            raise BenchError(f"{server.title} did not answer {body[:120]}: {error}") from None
        if expected is None:
            continue
        if len(got) != len(expected) or not np.allclose(got, expected, rtol=0, atol=1e-5):
            raise BenchError(f"{server.title} answered {got} where the model gives {expected}")


def in_turn(
    servers: dict[str, Server],
    wrk: str,
    workdir: Path,
    *,
    env: dict[str, str],
    clients: int,
    seconds: float,
    warmup: float,
    rounds: int = ROUNDS,
) -> dict[str, list[dict[str, float]]]:
    """Load figures of servers that run at once, each loaded alone in turn, ``rounds`` times.

    So that every server sees the same machine; ``env`` should give them one worker each.
    Each server is sent its own bodies.
    """
    figures: dict[str, list[dict[str, float]]] = {key: [] for key in servers}
    with ExitStack() as stack:
        targets = {}
        for key, server in servers.items():
            log = workdir / f"{server.key}.log"
            base = stack.enter_context(running(server, log, env | server.env)).base
            script = workdir / f"{server.key}-in-turn.lua"
            script.write_text(lua_script(server.bodies))
            targets[key] = (base + server.path, script)
            check_answers(server, base)
        for url, script in targets.values():
            run_wrk(wrk, url, script, clients, warmup)
        for _ in range(rounds):
            for key, (url, script) in targets.items():
                load = run_wrk(wrk, url, script, clients, seconds)
                if load.errors:
                    raise BenchError(f"{key}: {load.errors} failed requests")
                figures[key].append(load.as_dict())
    return figures


def server_env(paths: Paths, workers: int | None) -> dict[str, str]:
    """The servers' environment: this venv first on PATH, the local MLflow store, offline.

    BentoML takes the worker count from ``serve.workers``; a configuration override sets it to
    ``workers``, so that every server runs as many processes (None: ``serve.workers``).
    """
    venv_bin = str(Path(sys.executable).parent)
    env = os.environ | {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri(paths.mlflow),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": str(Path.cwd()),
    }
    if workers is not None:
        service = load_section("register", RegisterParams).model_name
        overrides = {"services": {service: {"workers": workers}}}
        env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    return env
