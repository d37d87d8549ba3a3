"""The command-line tools a release runs (uv, docker, buildah, skopeo, syft, hadolint).

Apart from :mod:`pipelines.core.io`, which every stage depends on: how the release runs its
tools is no input of the model, and changing it retrains nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.core.io import PipelineError


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool, capturing its output; a failure raises with what it said."""
    done = subprocess.run(
        args, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise PipelineError(f"`{' '.join(args)}` exited {done.returncode}: {said[-2000:]}")
    return done


def find_tool(name: str, hint: str) -> str:
    """The path of a command-line tool (on PATH or beside Python), or an error saying ``hint``."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise PipelineError(f"`{name}` is not installed: {hint}")
    return found
