"""Where a model came from: the git commit, the data's hash, the stages' outputs, the MLflow store.

Every record of a model (the MLflow run, the model card, the bento's labels, the image's trace)
reads these the same way.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.params import load_paths


def tracking_uri(store: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a sqlite database inside ``store``.

    ``store`` defaults to ``paths.mlflow`` of params.yaml.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store or load_paths().mlflow}/mlflow.db"


def run_url(tracking: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page on an MLflow server (an http(s) tracking URI), None for a local store.

    Credentials in the URI (``https://user:secret@host``) are left out.
    """
    parts = urllib.parse.urlsplit(tracking)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def data_hash(dvc_file: Path) -> str:
    """The content hash that a ``.dvc`` file records for its data."""
    outs = yaml.safe_load(dvc_file.read_text())["outs"]
    return str(outs[0]["md5"])


def git_state(outputs: Sequence[str | Path] = ()) -> dict[str, str]:
    """Current commit and whether the work tree has uncommitted changes.

    Args:
        outputs: Files and folders the pipeline itself writes (``dvc.lock``, the metrics, the
            plots): a change there is the run being recorded, not a change of what it ran.
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    excluded = [f":(exclude){path}" for path in outputs]
    changed = git("status", "--porcelain", "--", ".", *excluded)
    return {"git_commit": commit, "git_dirty": str(bool(changed))}


def stage_hashes(lock: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The md5 of every output of every stage that ``dvc.lock`` records."""
    return {
        str(name): {str(out["path"]): str(out.get("md5", "")) for out in stage.get("outs") or []}
        for name, stage in (lock.get("stages") or {}).items()
    }
