"""`make help`: every documented target, once, under the section the docs group it in."""

from __future__ import annotations

import os
import re
import subprocess

from tests.support.columns import ROOT

SECTIONS = [
    "Pipeline",
    "Review",
    "Serving",
    "Release",
    "Monitoring",
    "Template",
    "Team",
    "Development",
]


def test_make_help_lists_every_documented_target_once_by_section() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    sections: dict[str, list[str]] = {}
    current = None
    for line in done.stdout.splitlines():
        if heading := re.match(r"^(\w+): ", line):
            current = heading.group(1)
            sections[current] = []
        elif (target := re.match(r"^  make (\S+) ", line)) and target.group(1) != "help":
            assert current is not None, f"{target.group(1)} is listed before any section"
            sections[current].append(target.group(1))
    assert list(sections) == SECTIONS
    assert all(sections.values()), "a section without targets"
    documented = re.findall(r"(?m)^([a-z0-9-]+):[^=\n]*## ", (ROOT / "Makefile").read_text())
    listed = [t for targets in sections.values() for t in targets]
    assert sorted(listed) == sorted(set(documented) - {"help"})
