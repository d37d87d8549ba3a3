"""Helpers for deploy/'s manifests: real `kubectl kustomize` renders and real `make` runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipelines.params import RegisterParams, load_section

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MODEL = load_section("register", RegisterParams, ROOT / "params.yaml").model_name
OVERLAYS = ("staging", "production")


def render(overlay: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize` renders from ``overlay``."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single resource of ``kind``."""
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a target of the project's Makefile from the repository root, as a user would.

    uv is offline: the checks use what is installed (checkov by `make install-tools`) and a run
    that would download anything fails instead.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    env["UV_OFFLINE"] = "1"
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old``, which must be in ``path``, with ``new``."""
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))
