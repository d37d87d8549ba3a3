"""Running real `promtool` on generated rules: `check rules`, and `test rules` with input series.

.ci/run installs promtool (Debian's `prometheus`); in CI (the CI variable set) a missing promtool
fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.serving import names

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool is not installed (apt-get install prometheus)",
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; it must exist (a skip above covers machines outside CI)."""
    assert PROMTOOL is not None, "promtool is not installed: .ci/run installs it (prometheus)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False)


def check_rules(groups: Mapping[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on ``groups`` written as a rule file."""
    (folder / "rules.yml").write_text(yaml.safe_dump(dict(groups), sort_keys=False))
    return promtool("check", "rules", "rules.yml", cwd=folder)


def run_rule_tests(
    groups: Mapping[str, Any], tests: Sequence[Mapping[str, Any]], folder: Path
) -> None:
    """`promtool test rules` of ``tests`` against ``groups``; fails with promtool's report."""
    (folder / "rules.yml").write_text(yaml.safe_dump(dict(groups), sort_keys=False))
    document = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": list(tests)}
    (folder / "test.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    done = promtool("test", "rules", "test.yml", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr


def series(name: str, labels: Mapping[str, str], values: Iterable[float | None]) -> dict[str, str]:
    """One input series, a sample per minute from 0 (None: no sample)."""
    matchers = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    samples = " ".join("_" if v is None else repr(float(v)) for v in values)
    return {"series": f"{name}{{{matchers}}}", "values": samples}


def without_annotations(groups: Mapping[str, Any]) -> dict[str, Any]:
    """The rule groups with the alerts' annotations dropped (promtool compares them in full)."""
    return {
        "groups": [
            group
            | {
                "rules": [
                    {k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]
                ]
            }
            for group in groups["groups"]
        ]
    }


KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label names, functions, strings aside)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(", "(", text)  # functions and aggregations
    text = re.sub(r"\boffset\s+\w+", " ", text)
    found = re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    return {name for name in found if name.lower() not in KEYWORDS}


def exported_names() -> set[str]:
    """The series names the service exports (histograms as Prometheus stores them)."""
    plain = set(names.FAMILIES) - set(names.HISTOGRAMS)
    stored = {
        f"{h}_{s}"
        for h in (*names.HISTOGRAMS, names.BENTOML_FAMILIES[1])
        for s in ("bucket", "sum", "count")
    }
    return plain | stored | {names.BENTOML_FAMILIES[0]}
