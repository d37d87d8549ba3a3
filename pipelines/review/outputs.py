"""Both sides' evaluation outputs: the workspace's, and BASE's from DVC or reproduced.

BASE's outputs come from DVC, as BASE's ``dvc.lock`` records them (the local cache or the DVC
remote; files with ``cache: false`` are in git). When DVC has not got them, BASE is reproduced
in a temporary git worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipelines.core.features import read_features
from pipelines.core.io import PipelineError
from pipelines.core.metrics import Predictions, Task, evaluation_metrics, read_predictions
from pipelines.core.model import load_model, read_target
from pipelines.params import FairnessParams, GateParams, Paths
from pipelines.review.gate import GateResult, Side


class CompareError(PipelineError):
    """The two models could not be compared (exit 2)."""


@dataclass(frozen=True)
class Outputs:
    """One model's evaluation outputs.

    The model's task and classes are read from its ``meta.json`` when the outputs are made:
    BASE's files live in a temporary folder that is gone by the time the comment is written.
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    segments: dict[str, Any]
    model: Path
    registry: dict[str, Any] | None
    fairness: dict[str, Any] = field(default_factory=dict)  # eval/fairness.json ({}: none)
    target: tuple[Task, tuple[Any, ...]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", read_target(self.model))

    @property
    def task(self) -> Task:
        """The model's task, as its ``meta.json`` says (binary without one)."""
        return self.target[0]

    def read(self) -> Predictions:
        """The predictions, read as the model's task says."""
        return read_predictions(self.predictions, *self.target)

    def side(self) -> Side:
        """What the gate reads of these outputs."""
        return Side(self.read(), self.metrics)


@dataclass(frozen=True)
class Base:
    """The git ref compared against, and where its outputs came from."""

    ref: str
    commit: str
    source: str  # "DVC", "reproduced" or "none" (no model at BASE)
    outputs: Outputs | None


@dataclass(frozen=True)
class ValueView:
    """What the comment shows of value, under the PR's value model, on the gated rows.

    ``curves``: per side (``base``, ``pr``), value per 1,000 rows at thresholds 0 to 1 (a binary
    model's); ``thresholds``: each side's decision threshold; ``trivial``: the best trivial
    policy on the PR's rows and its value.
    """

    currency: str
    unit: str
    curves: dict[str, list[dict[str, float]]]
    thresholds: dict[str, float]
    trivial: tuple[str, float]


@dataclass(frozen=True)
class Report:
    """Everything the comment shows."""

    base: Base
    gate: GateResult
    params: GateParams
    pr: Outputs
    params_diff: dict[str, dict[str, Any]] = field(default_factory=dict)
    gate_rules_changed: bool = False
    data_md5: tuple[str | None, str | None] = (None, None)
    validation: dict[str, Any] | None = None
    model_stats: dict[str, dict[str, float | None]] = field(default_factory=dict)
    holdout: dict[str, Any] | None = None  # the new holdout BASE's model was scored on, if any
    card_metrics: tuple[str, ...] = ()  # card.segment_metrics; () for the comment's own per task
    value: ValueView | None = None  # None without a value model
    fairness: FairnessParams | None = None  # the PR's fairness: section, None without one


def progress(message: str) -> None:
    """Say what a long step is doing, on stderr (stdout carries the verdict)."""
    print(f"report: {message}", file=sys.stderr, flush=True)


def read_outputs(root: Path, paths: Paths) -> Outputs:
    """Read the evaluation outputs of the model whose files lie under ``root``.

    Raises:
        CompareError: A file is missing or unreadable.
    """
    try:
        registry_file = root / paths.registry
        fairness = root / paths.fairness
        return Outputs(
            predictions=pd.read_csv(root / paths.predictions),
            metrics=json.loads((root / paths.metrics).read_text()),
            segments=json.loads((root / paths.segments).read_text()),
            model=root / paths.model,
            registry=json.loads(registry_file.read_text()) if registry_file.exists() else None,
            fairness=json.loads(fairness.read_text()) if fairness.exists() else {},
        )
    except (OSError, ValueError) as error:
        raise CompareError(f"cannot read the evaluation outputs: {error}") from None


def git(root: Path, *args: str) -> str | None:
    """Output of a git command in ``root``, or None when it fails."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def resolve(root: Path, ref: str) -> str:
    """The commit that ``ref`` names."""
    if ref.startswith("-"):
        raise CompareError(f"'{ref}' is not a git ref")
    commit = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not commit:
        raise CompareError(
            f"'{ref}' is not a commit of this repository: fetch it (git fetch origin {ref}) "
            "or pass BASE=<branch, tag or commit>"
        )
    return commit.strip()


def stage_of(lock: dict[str, Any], output: Path) -> str | None:
    """Name of the stage of a ``dvc.lock`` document that writes ``output``."""
    for name, stage in (lock.get("stages") or {}).items():
        if any(out.get("path") == output.as_posix() for out in stage.get("outs") or []):
            return str(name)
    return None


def check_workspace(root: Path, paths: Paths) -> None:
    """Refuse to compare outputs that are stale against the workspace's code, params or data."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = repo.stage.collect_granular(str(paths.predictions))
        if not stages:
            raise CompareError(f"no stage of dvc.yaml writes {paths.predictions}")
        status = repo.status(targets=[stages[0][0].addressing], with_deps=True)
    # An output missing from the cache (a fresh clone, a cleared cache) is not a stale one
    changed = [stage for stage, entries in status.items() if _leaves(entries) - {"not in cache"}]
    if changed:
        raise CompareError(
            f"the workspace's outputs are stale (stages {', '.join(changed)} changed): "
            "run `dvc repro` first"
        )


def _leaves(status: Any) -> set[str]:
    """The innermost values of a ``dvc status`` entry ("modified", "not in cache", ...)."""
    if isinstance(status, dict):
        return set().union(*(_leaves(v) for v in status.values()))
    if isinstance(status, list):
        return set().union(*(_leaves(v) for v in status))
    return {str(status)}


def fetch(root: Path, commit: str, paths: Paths, into: Path) -> None:
    """Copy BASE's outputs out of DVC (cache or remote) and git into ``into``.

    Raises:
        FileNotFoundError: DVC has not got them (neither in the cache nor on a remote).
    """
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc_data.index.index import DataIndexError

    fs = DVCFileSystem(str(root), rev=commit)
    required = (paths.metrics, paths.segments, paths.predictions, paths.model)
    try:
        for path in (*required, paths.registry, paths.train, paths.fairness):
            destination = into / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get(path.as_posix(), str(destination), recursive=True)
            except FileNotFoundError:
                if path in required:
                    raise
    except (DvcException, DataIndexError) as error:  # e.g. a directory's listing not there
        raise FileNotFoundError(str(error)) from None


def run_logged(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run a command with its output on stderr; raise CompareError naming it if it fails."""
    done = subprocess.run(
        command, check=False, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr
    )
    if done.returncode != 0:
        shown = " ".join(command[2:] if command[1] == "-m" else command)
        raise CompareError(f"`{shown}` failed at BASE (exit {done.returncode}; output above)")


@contextmanager
def worktree(root: Path, commit: str) -> Iterator[Path]:
    """A temporary git worktree of ``commit``, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="report-base-"))
    path = parent / "repo"
    if git(root, "worktree", "add", "--detach", "--quiet", str(path), commit) is None:
        shutil.rmtree(parent, ignore_errors=True)
        raise CompareError(f"cannot create a git worktree of {commit[:12]}")
    try:
        yield path
    finally:
        git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        git(root, "worktree", "prune")


def reproduce(root: Path, commit: str, stage: str, paths: Paths, into: Path) -> None:
    """Reproduce BASE up to ``stage`` in a temporary worktree; copy its outputs into ``into``.

    Only the stages that the outputs need run (not register: a reproduced BASE is no new model
    version). BASE's own code, data step and ``dvc.lock`` are used, with this environment.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        cache = str(repo.cache.local_cache_dir)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    python = sys.executable
    with worktree(root, commit) as tree:
        # The workspace's local DVC settings hold for BASE too: a table that lives only in DVC
        # comes from its remote, often set with `dvc remote modify --local` (credentials).
        if (root / ".dvc" / "config.local").exists():
            shutil.copy2(root / ".dvc" / "config.local", tree / ".dvc" / "config.local")
        # The worktree uses this repository's DVC cache (cache.dir in its config.local): the raw
        # data is checked out rather than fetched, stages whose inputs are unchanged at BASE are
        # restored from the run-cache rather than recomputed, and what BASE does compute is
        # cached for the next report.
        run_logged([python, "-m", "dvc", "config", "--local", "cache.dir", cache], tree, env)
        progress("getting BASE's data")
        run_logged([python, "-m", "pipelines.stages.data"], tree, env)
        progress(f"dvc repro {stage} at BASE")
        run_logged([python, "-m", "dvc", "repro", stage], tree, env)
        made = (paths.metrics, paths.segments, paths.predictions, paths.model, paths.train)
        for path in (*made, paths.fairness):
            if not (tree / path).exists() and path == paths.fairness:
                continue  # a BASE from before fairness audits
            destination = into / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            if (tree / path).is_dir():
                shutil.copytree(tree / path, destination)
            else:
                shutil.copy2(tree / path, destination)


def base_outputs(root: Path, ref: str, paths: Paths, into: Path) -> Base:
    """BASE's outputs: from DVC, else reproduced; ``source`` "none" when BASE has no model."""
    commit = resolve(root, ref)
    lock_text = git(root, "show", f"{commit}:dvc.lock")
    lock = yaml.safe_load(lock_text) if lock_text else {}
    stage = stage_of(lock or {}, paths.predictions)
    if stage is None:
        progress(f"{ref} has no model yet (no {paths.predictions} in its dvc.lock)")
        return Base(ref, commit, "none", None)
    progress(f"getting the outputs of {ref} ({commit[:12]}) from DVC")
    try:
        fetch(root, commit, paths, into)
        return Base(ref, commit, "DVC", read_outputs(into, paths))
    except FileNotFoundError as error:
        progress(f"not in the DVC cache or remote ({error}): reproducing {ref} in a worktree")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    started = time.monotonic()
    reproduce(root, commit, stage, paths, into)
    progress(f"reproduced {ref} in {time.monotonic() - started:.0f} s")
    return Base(ref, commit, "reproduced", read_outputs(into, paths))


def consistent(outputs: Outputs, names: list[str], side: str) -> None:
    """Check that the metrics file says what the predictions say (both come from one run)."""
    predictions = outputs.read()
    if predictions.problem():
        return  # the gate reports unusable predictions as a failure of its own
    computed = evaluation_metrics(predictions, outputs.metrics.get("threshold"))
    for name in (n for n in names if n in computed):  # value: the gate recomputes it
        written = outputs.metrics.get(name)
        if isinstance(written, float) and abs(written - computed[name]) > 1e-5:
            raise CompareError(
                f"{side}'s metrics file says {name} {written} but its predictions give "
                f"{computed[name]:.6f}: the outputs are from different runs; run `dvc repro`"
            )


SINGLE_REPEATS = 25
BATCH_REPEATS = 5


def model_bytes(directory: Path) -> int:
    """Total size of the files of a model directory."""
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def latency(directories: dict[str, Path], x: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Median seconds to score one row and the whole of ``x``, for each model directory.

    Models are loaded with the pipeline's own loader and timed in turn, repeat after repeat, so
    that a busy machine slows them alike and the first one timed pays no warm-up for the others.
    """
    models = {name: load_model(directory) for name, directory in directories.items()}
    timed = {n: m for n, m in models.items() if set(m.meta["features"]) <= set(x.columns)}
    times: dict[str, dict[str, list[float]]] = {n: {"single": [], "batch": []} for n in timed}
    row = x.iloc[:1]
    for model in timed.values():  # warm-up: first-call allocations are not the model's speed
        model.predict(x)
    for kind, frame, repeats in (("single", row, SINGLE_REPEATS), ("batch", x, BATCH_REPEATS)):
        for _ in range(repeats):
            for name, model in timed.items():
                started = time.perf_counter()
                model.predict(frame)
                times[name][kind].append(time.perf_counter() - started)
    # a model that takes features the test set no longer has (BASE's, after a schema change)
    # is not timed
    return {
        name: {
            kind: statistics.median(times[name][kind]) if name in timed else None
            for kind in ("single", "batch")
        }
        for name in models
    }


def model_stats(base: Outputs | None, pr: Outputs, test: Path) -> dict[str, dict[str, Any]]:
    """Size and prediction latency of each model, on the workspace's test features."""
    x, _, _ = read_features(test)
    directories = {name: o.model for name, o in (("base", base), ("pr", pr)) if o is not None}
    progress(f"timing the models on {len(x):,} test rows")
    timed = latency(directories, x)
    return {
        name: {"bytes": model_bytes(directory), "rows": len(x), **timed[name]}
        for name, directory in directories.items()
    }
