"""`make check-lock`: does the committed dvc.lock match what the code and data reproduce?

A merge whose dvc.lock is stale would ship a model and metrics that the committed code does not
produce. This runs ``dvc repro`` and compares the resulting dvc.lock with the one in the last
commit, stage by stage (command, dependencies, params, outputs), ignoring only what names a local
MLflow run, whose hash differs per machine: the register stage's outputs (models/registry.json)
and the card stage's, which quotes the run (and its dependency on registry.json).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError, run_stage

LOCK = Path("dvc.lock")  # DVC's own name for it, beside dvc.yaml
FIELDS = ("cmd", "deps", "params", "outs")
IGNORED = frozenset({("register", "outs"), ("card", "outs")})
FIX = "run `make repro` and commit dvc.lock"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat |= _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return flat
    return {prefix: value}


def _flat_params(params: Any) -> dict[str, Any]:
    return {
        f"{file}:{key}": value
        for file, section in (params or {}).items()
        for key, value in _flatten(section).items()
    }


def _by_path(entries: Any) -> dict[str, dict[str, Any]]:
    return {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in entries or []}


def _field_changes(field: str, committed: Any, reproduced: Any) -> Iterator[str]:
    """Say what differs in one field of one stage, as readable fragments."""
    if field == "cmd":
        yield "the command changed"
        return
    if field == "params":
        # {params.yaml: {train: {...}}} -> params.yaml:train.seed
        old, new = _flat_params(committed), _flat_params(reproduced)
    else:
        old, new = _by_path(committed), _by_path(reproduced)
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            yield f"{key} is no longer there"
        elif key not in old:
            yield f"{key} is new"
        elif old[key] != new[key]:
            yield f"{key}: {old[key]!r} -> {new[key]!r}" if field == "params" else f"{key} changed"


def compare_locks(committed: Mapping[str, Any], reproduced: Mapping[str, Any]) -> list[str]:
    """List every difference between two dvc.lock documents, one line per stage and field.

    Args:
        committed: the dvc.lock of the last commit, as parsed YAML.
        reproduced: the dvc.lock that ``dvc repro`` wrote, as parsed YAML.

    Returns:
        Lines like ``train.params: params.yaml:train.seed: 42 -> 7``; empty when they match.
    """
    old_stages = committed.get("stages") or {}
    new_stages = reproduced.get("stages") or {}
    # a dependency on an ignored output differs as that output does
    ignored = {
        e["path"]
        for stage, field in IGNORED
        for lock in (old_stages, new_stages)
        for e in (lock.get(stage) or {}).get(field) or []
    }
    problems = []
    for stage in [*new_stages, *(s for s in old_stages if s not in new_stages)]:
        if stage not in old_stages:
            problems.append(f"{stage}: not in the committed dvc.lock")
            continue
        if stage not in new_stages:
            problems.append(f"{stage}: in the committed dvc.lock but no longer in dvc.yaml")
            continue
        for field in FIELDS:
            old, new = old_stages[stage].get(field), new_stages[stage].get(field)
            if field == "deps":
                old, new = ([e for e in d or [] if e["path"] not in ignored] for d in (old, new))
            if (stage, field) in IGNORED or old == new:
                continue
            changes = list(_field_changes(field, old, new)) or ["changed"]
            problems.append(f"{stage}.{field}: {'; '.join(changes)}")
    return problems


def committed_lock(lock: Path = LOCK) -> dict[str, Any]:
    """The dvc.lock of the last commit (``git show HEAD:dvc.lock``)."""
    shown = subprocess.run(
        ["git", "show", f"HEAD:{lock.as_posix()}"], capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        raise PipelineError(f"{lock} is not in the last commit ({shown.stderr.strip()}): {FIX}")
    return yaml.safe_load(shown.stdout) or {}


def main() -> int:
    """Reproduce the pipeline, then compare its dvc.lock with the committed one."""
    committed = committed_lock()
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro"], check=False)
    if repro.returncode != 0:
        raise PipelineError("`dvc repro` failed (see above): fix the pipeline first")
    problems = compare_locks(committed, yaml.safe_load(LOCK.read_text()) or {})
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise PipelineError(
            f"the committed {LOCK} differs from what the code and data reproduce:\n{listed}\n"
            f"What to do next: {FIX}."
        )
    stages = len(committed.get("stages") or {})
    print(f"{LOCK} matches what the code and data reproduce ({stages} stages)")
    return 0


if __name__ == "__main__":
    run_stage(main)
