"""The docs' commands, followed literally on a fresh clone, do what the docs say.

The blocks a newcomer would paste are marked in the Markdown itself, so a change to the docs is a
change to this test:

- ``<!-- run -->`` before a ```` ```bash ```` or ```` ```python ```` block: run it in the
  repository's folder, in a shell where only the docs' own ``source .venv/bin/activate`` puts the
  environment's tools on PATH; it must exit 0 (``<!-- run exit=0,2 -->``: one of those codes);
- ``<!-- serve URL -->`` before a block that starts a server: start it in the background and
  wait until URL answers; it is stopped when the page is done;
- ``<!-- output -->`` before a ```` ```text ```` block after a run block: each of its lines
  appears in that block's output, in order, ``...`` standing for anything.

README.md runs first, then the pages in ``mkdocs.yml``'s order, one after the other in the same
copy, as a reader going through them would. An ``export`` line of a block holds for the page's
later blocks, as in one shell. Servers listen on free ports instead of the docs' 3000 and 5001
(several test runs share a machine). The copy is one where `make run` already ran (the
``fresh_clone`` fixture the pipeline tests share), which is what the README's quick start does.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.columns import ROOT
from tools.scratch import BIN, FreshClone, ScratchRepo

pytestmark = pytest.mark.slow

MARK = re.compile(r"^<!-- (run|serve|output)(?: ([^>]*?))? -->\n```(\w*)\n(.*?)^```$", re.M | re.S)
PORTS = (3000, 5001)  # the ports the docs' servers listen on
ACTIVATE = "source .venv/bin/activate"


@dataclass
class Block:
    """One marked code block of a page."""

    kind: str  # run, serve or output
    argument: str  # run: the exit codes allowed; serve: the URL that answers when it is up
    language: str
    code: str
    expected: list[str] = field(default_factory=list)  # the output block's lines (run blocks)


def pages() -> list[Path]:
    """README.md, then the docs pages in the site's order."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python/name:", ""))["nav"]
    return [ROOT / "README.md", *(ROOT / "docs" / next(iter(e.values())) for e in nav)]


def blocks(page: Path) -> list[Block]:
    """The page's marked blocks, each output block joined to the run block before it."""
    found: list[Block] = []
    for kind, argument, language, code in MARK.findall(page.read_text()):
        if kind == "output":
            assert found, f"{page.name}: an output block before any run block"
            assert found[-1].kind == "run", f"{page.name}: an output block after a serve block"
            found[-1].expected = [line for line in code.splitlines() if line.strip()]
        else:
            assert language in ("bash", "python"), f"{page.name}: a {kind} block in {language!r}"
            found.append(Block(kind, argument or "", language, code))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def on_free_ports(code: str, ports: dict[int, int]) -> str:
    """The block with each of the docs' ports replaced by this run's."""
    for docs, free in ports.items():
        code = re.sub(rf"(?<=[:\s]){docs}\b", str(free), code)
    return code.replace("make serve", f"make serve PORT={ports[3000]}")


def script(block: Block, exports: list[str], ports: dict[int, int]) -> str:
    """What a reader's shell runs: the activation, the page's exports so far, the block."""
    code = on_free_ports(block.code, ports)
    if block.language == "python":
        code = f"python - <<'PYTHON'\n{code}PYTHON\n"
    return "\n".join(["set -eo pipefail", ACTIVATE, *exports, code])


def matches(expected: list[str], output: str) -> list[str]:
    """The expected lines that are not in the output, in order (``...``: anything)."""
    missing, start = [], 0
    for line in expected:
        pattern = ".*?".join(re.escape(part) for part in line.strip().split("..."))
        found = re.compile(pattern).search(output, start)
        if found is None:
            missing.append(line)
        else:
            start = found.end()
    return missing


def wait_for(url: str, server: subprocess.Popen[bytes], log: Path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (http://127.0.0.1)
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer in {seconds:.0f} s:\n{log.read_text()[-4000:]}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it started (its own process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def reader(fresh_clone: FreshClone, tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """A copy of the fresh clone whose shell has none of the environment's tools on PATH.

    Its ``.venv`` is the environment running the tests (as ``make install`` made it), so only
    ``source .venv/bin/activate`` brings ``dvc``, ``python`` and ``mlflow``, as on a laptop.
    """
    repo = fresh_clone.repo.copy(tmp_path_factory.mktemp("docs") / "repo")
    (repo.path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    with (repo.path / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    path = [d for d in repo.env["PATH"].split(os.pathsep) if Path(d).resolve() != BIN.resolve()]
    repo.env["PATH"] = os.pathsep.join(path)
    repo.env.pop("VIRTUAL_ENV", None)
    return repo


@pytest.fixture(scope="module")
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for server in started:
        stop(server)


def test_every_page_is_in_the_site_and_the_readme_points_at_the_first_one() -> None:
    listed = {p.name for p in pages()[1:]}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}
    readme = (ROOT / "README.md").read_text()
    for said in ("make run", ACTIVATE, "docs/index.md"):
        assert said in readme, said
    for page in pages():
        for block in blocks(page):  # a bare tool needs the activation the docs say once
            assert block.kind != "run" or "uv run" not in block.code, page.name


def test_the_docs_commands_do_what_the_docs_say(
    reader: ScratchRepo, servers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    ran = 0
    for page in pages():
        exports: list[str] = []
        ports = {docs: free_port() for docs in PORTS}
        started: list[subprocess.Popen[bytes]] = []
        for number, block in enumerate(blocks(page), 1):
            where = f"{page.relative_to(ROOT)}, block {number}"
            text = script(block, exports, ports)
            if block.kind == "serve":
                log = tmp_path / f"{page.stem}-{number}.log"
                with log.open("wb") as out:
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec 2>&1\n{text}"],
                        cwd=reader.path,
                        env=reader.env,
                        stdout=out,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                servers.append(server)
                started.append(server)
                wait_for(on_free_ports(block.argument, ports), server, log)
                continue
            done = subprocess.run(
                ["bash", "-c", text],
                cwd=reader.path,
                env=reader.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            allowed = {int(c) for c in block.argument.removeprefix("exit=").split(",") if c}
            assert done.returncode in (allowed or {0}), f"{where} exited {done.returncode}:\n" + (
                f"{block.code}\n{done.stdout[-4000:]}"
            )
            missing = matches(block.expected, done.stdout)
            assert not missing, f"{where}: not in its output: {missing}\n{done.stdout[-4000:]}"
            exports += [line for line in block.code.splitlines() if line.startswith("export ")]
            ran += 1
        for server in started:
            stop(server)
    assert ran >= 10
