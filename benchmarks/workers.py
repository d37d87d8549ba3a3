"""The served model's processes, read from /proc: memory, connections, a worker killed.

What ``benchmarks/soak.py`` (and ``tests/e2e/test_served_worker_kill.py``) measure a
``bentoml serve`` with: the resident memory of its arbiter and of each API worker, the
connections each worker holds, and the SIGKILL of one worker with the watch for its
replacement. Processes and their roles come from :func:`benchmarks.load.tree_roles`.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from benchmarks.load import BenchError, status_kib, tree_roles

# BentoML's arbiter (circus) looks at its workers every 10 s (check_delay, set by BentoML):
# a dead one is noticed within 10 s, then its replacement loads the model.
CHECK_PERIOD_S = 10.0
# BentoML logs this line when a worker has built the service (loaded the model), just before
# it starts accepting connections.
INITIALIZED = re.compile(r"\bService \S+ initialized\b")
TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def workers_of(roles: Mapping[int, str]) -> list[int]:
    """The API workers' process ids, oldest (lowest) first."""
    return sorted(pid for pid, role in roles.items() if role == "worker")


def pick_worker(roles: Mapping[int, str], held: Mapping[int, int]) -> int:
    """The worker to kill: the one holding the most connections (the worst case).

    The oldest (lowest id) on a tie.

    Raises:
        BenchError: No API worker among the processes.
    """
    workers = workers_of(roles)
    if not workers:
        raise BenchError(f"no BentoML API worker among the processes {dict(roles)}")
    return max(workers, key=lambda pid: (held.get(pid, 0), -pid))


def established_inodes(net_tcp: str, port: int) -> set[int]:
    """Socket inodes of the established connections to local ``port``, from ``/proc/net/tcp``."""
    inodes = set()
    for line in net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[3] == TCP_ESTABLISHED:
            inodes.add(int(fields[9]))
    return inodes


def held_connections(pid: int, port: int, proc: Path = Path("/proc")) -> int:
    """How many established connections to ``port`` process ``pid`` holds (0 when it is gone)."""
    connections: set[int] = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            connections |= established_inodes((proc / "net" / table).read_text(), port)
    try:
        descriptors = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return 0  # gone
    held = 0
    for fd in descriptors:
        try:
            link = re.fullmatch(r"socket:\[(\d+)\]", str(fd.readlink()))
        except OSError:
            continue  # closed meanwhile
        held += bool(link and int(link[1]) in connections)
    return held


def initialized_workers(log: str) -> int:
    """How many times a worker said it has built the service (loaded the model) in ``log``."""
    return len(INITIALIZED.findall(log))


def memory_mib(root: int, proc: Path = Path("/proc")) -> dict[str, float]:
    """The resident memory of the arbiter, of each worker and of all workers, in MiB."""
    reading: dict[str, float] = {}
    for pid, role in tree_roles(root, proc).items():
        if role not in ("arbiter", "worker"):
            continue  # make and uv, which only wait
        try:
            rss = status_kib((proc / str(pid) / "status").read_text(), "VmRSS") / 1024
        except (OSError, ValueError):
            continue  # gone meanwhile
        reading["arbiter" if role == "arbiter" else f"worker {pid}"] = rss
    workers = [mib for name, mib in reading.items() if name.startswith("worker ")]
    if workers:
        reading["workers"] = sum(workers)
    return reading


@contextmanager
def sampling(root: int, period_s: float) -> Iterator[list[dict[str, float]]]:
    """Read :func:`memory_mib` every ``period_s`` until the block ends; yield the readings."""
    readings: list[dict[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            readings.append(memory_mib(root))
            if stop.wait(period_s):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield readings
    finally:
        stop.set()
        thread.join()


def kill_and_watch(root: int, port: int, log: Path, watch_s: float) -> dict[str, Any]:
    """SIGKILL the API worker of ``root`` holding the most connections; watch for a new one.

    Once every worker has loaded the model. A new worker is a new process, then its model
    loaded (its line in the server's ``log``).

    Returns:
        ``workers_before`` and ``workers_after`` (counts), ``held_connections`` (each worker's,
        oldest first), ``killed_held_connections``, ``respawned_s`` and ``ready_s`` (seconds
        after the kill; None when not within ``watch_s``) and ``watched_s``.

    Raises:
        BenchError: The server has fewer than two workers, or they did not all load the model
            within ``watch_s``.
    """
    roles = tree_roles(root)
    before = workers_of(roles)
    if len(before) < 2:
        raise BenchError(f"{len(before)} API worker(s): killing one needs two or more")
    # /readyz answers once one worker is up: wait for every one, or a late worker's line would
    # read as the replacement's
    deadline = time.monotonic() + watch_s
    while (initialized := initialized_workers(log.read_text(errors="replace"))) < len(before):
        if time.monotonic() > deadline:
            raise BenchError(f"{initialized} of {len(before)} workers loaded the model")
        time.sleep(0.1)
    held = {pid: held_connections(pid, port) for pid in before}
    victim = pick_worker(roles, held)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    respawned_s = ready_s = None
    after = before
    while time.monotonic() - killed < watch_s and ready_s is None:
        time.sleep(0.1)
        after = workers_of(tree_roles(root))
        elapsed = time.monotonic() - killed
        if respawned_s is None and victim not in after and len(after) >= len(before):
            respawned_s = elapsed
        loaded = initialized_workers(log.read_text(errors="replace")) > initialized
        if respawned_s is not None and loaded:
            ready_s = elapsed
    return {
        "workers_before": len(before),
        "workers_after": len(after),
        "held_connections": [held[pid] for pid in before],
        "killed_held_connections": held[victim],
        "respawned_s": respawned_s,
        "ready_s": ready_s,
        "watched_s": watch_s,
    }
