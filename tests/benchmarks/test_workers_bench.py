"""The /proc readings of the soak benchmark: roles, memory, connections held, log lines."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from benchmarks import load, workers


def fake_proc(root: Path, processes: dict[int, tuple[int, str, int]]) -> Path:
    """A /proc of ``pid: (parent, command line, VmRSS in KiB)``."""
    for pid, (parent, command, rss) in processes.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        (folder / "stat").write_text(f"{pid} (some name) S {parent} 1 1 0\n")
        (folder / "cmdline").write_bytes(command.replace(" ", "\0").encode() + b"\0")
        (folder / "status").write_text(f"Name:\tx\nVmHWM:\t{rss + 1024} kB\nVmRSS:\t{rss} kB\n")
    return root


def test_memory_is_read_for_the_arbiter_and_each_worker(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: (1, "make serve PORT=1", 2048),
            11: (10, "/venv/bin/python /venv/bin/bentoml serve svc:Model", 150 * 1024),
            12: (11, "/venv/bin/python -m _bentoml_impl.worker.service svc:Model", 300 * 1024),
            13: (11, "/venv/bin/python -m _bentoml_impl.worker.service svc:Model", 310 * 1024),
            14: (1, "/venv/bin/python -m _bentoml_impl.worker.service other:Model", 999),
        },
    )
    assert load.tree_roles(10, proc) == {10: "make", 11: "arbiter", 12: "worker", 13: "worker"}
    assert workers.memory_mib(10, proc) == {
        "arbiter": 150.0,
        "worker 12": 300.0,
        "worker 13": 310.0,
        "workers": 610.0,
    }
    assert [p["peak_mib"] for p in load.tree_peaks(10, proc)] == [311.0, 301.0, 151.0, 3.0]


def test_the_worker_holding_the_most_connections_is_killed() -> None:
    roles = {10: "arbiter", 12: "worker", 13: "worker", 14: "worker", 20: "uv"}
    assert workers.pick_worker(roles, {12: 5, 13: 11, 14: 11, 10: 40, 20: 99}) == 13
    assert workers.pick_worker(roles, {}) == 12  # no connections anywhere: the oldest
    with pytest.raises(load.BenchError, match="no BentoML API worker"):
        workers.pick_worker({10: "arbiter", 20: "uv"}, {10: 3})


NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:D431 0100007F:0BB8 01 00000000:00000000 00:00000000 00000000     0        0 333 1
   3: 0100007F:0BB8 0100007F:D432 06 00000000:00000000 03:00000000 00000000     0        0 0 3
   4: 0100007F:0BB9 0100007F:D433 01 00000000:00000000 00:00000000 00000000     0        0 444 1
   5: 0100007F:0BB8 0100007F:D434 01 00000000:00000000 00:00000000 00000000     0        0 555 1
"""


def test_established_connections_are_the_servers_side_on_its_port() -> None:
    # 0x0BB8 is 3000: not the listening socket (0A), nor the client's end (local D431), nor a
    # closing one (06), nor another port's
    assert workers.established_inodes(NET_TCP, 3000) == {222, 555}
    assert workers.established_inodes(NET_TCP, 3001) == {444}
    assert workers.established_inodes("header only\n", 3000) == set()


def test_the_connections_a_process_holds_are_counted_from_proc() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [listening.accept()[0] for _ in range(2)]  # the third waits in the backlog
        try:
            assert workers.held_connections(os.getpid(), port) == 2
            accepted[0].close()
            assert workers.held_connections(os.getpid(), port) == 1
        finally:
            for one in clients + accepted:
                one.close()
    assert workers.held_connections(-1, port) == 0  # gone: nothing held


def test_a_new_worker_is_seen_loaded_by_its_log_line() -> None:
    log = (
        "2026-01-01T00:00:00+0000 [INFO] [cli] Starting production HTTP BentoServer\n"
        "2026-01-01T00:00:04+0000 [INFO] [entry_service:some-model:1] Service some-model "
        "initialized\n"
        "2026-01-01T00:00:04+0000 [INFO] [entry_service:some-model:2] Service some-model "
        "initialized\n"
        "a request log line mentioning a service that was not initialized\n"
    )
    assert workers.initialized_workers(log) == 2
    assert workers.initialized_workers("") == 0
