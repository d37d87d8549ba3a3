"""Pull-request report: gate the workspace's model against the one at a base git ref.

BASE's evaluation outputs come from DVC, as BASE's ``dvc.lock`` records them (the local cache or
the DVC remote; files with ``cache: false`` are in git). When DVC has not got them, BASE is
reproduced in a temporary git worktree. The gate (:mod:`pipelines.review.gate`) decides; the report
is one GitHub comment in markdown (``--comment``) and a machine-readable verdict (``--json``).

Usage: ``python -m pipelines.review.report --base REF --comment reports/pr-comment.md
--json reports/gate.json``. Exit 0: the gate passed; 1: it failed; 2: could not compare (why is
printed in one line and written to the JSON file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
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

import numpy as np
import pandas as pd
import yaml

from pipelines.core.curves import pr_points, roc_points
from pipelines.core.features import read_features
from pipelines.core.formatting import cell, number
from pipelines.core.io import PipelineError, write_atomically, write_json
from pipelines.core.metrics import Predictions, classification_metrics
from pipelines.core.model import load_model
from pipelines.params import GateParams, Paths, load_paths, load_section
from pipelines.review.card_changes import changes_section as card_changes
from pipelines.review.gate import GateResult, MetricResult, Side, compare, pair
from pipelines.review.holdout import rescore
from pipelines.schema import Schema, load_schema, read_raw

MARKER = "<!-- model-report -->"  # the posting client finds (and updates) the comment by it
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
MAX_TABLE_ROWS = 25
GRID = np.linspace(0.0, 1.0, 21)  # x values of the inline charts
SINGLE_REPEATS = 25
BATCH_REPEATS = 5
ICONS = {
    "improved": "🟢 improved",
    "unchanged": "⚪ unchanged",
    "regressed": "🔴 regressed",
    "inconclusive": "🟡 inconclusive",
    "new": "🆕 new",
    "invalid": "⛔ invalid",
}


class CompareError(PipelineError):
    """The two models could not be compared (exit 2)."""


@dataclass(frozen=True)
class Outputs:
    """One model's evaluation outputs."""

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    segments: dict[str, Any]
    model: Path
    registry: dict[str, Any] | None

    def side(self) -> Side:
        """What the gate reads of these outputs."""
        return Side(Predictions.from_frame(self.predictions), self.metrics)


@dataclass(frozen=True)
class Base:
    """The git ref compared against, and where its outputs came from."""

    ref: str
    commit: str
    source: str  # "DVC", "reproduced" or "none" (no model at BASE)
    outputs: Outputs | None


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


def progress(message: str) -> None:
    """Say what a long step is doing, on stderr (stdout carries the verdict)."""
    print(f"report: {message}", file=sys.stderr, flush=True)


# --- reading outputs ----------------------------------------------------------------------------


def read_outputs(root: Path, paths: Paths) -> Outputs:
    """Read the evaluation outputs of the model whose files lie under ``root``.

    Raises:
        CompareError: A file is missing or unreadable.
    """
    try:
        registry_file = root / paths.registry
        return Outputs(
            predictions=pd.read_csv(root / paths.predictions),
            metrics=json.loads((root / paths.metrics).read_text()),
            segments=json.loads((root / paths.segments).read_text()),
            model=root / paths.model,
            registry=json.loads(registry_file.read_text()) if registry_file.exists() else None,
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

    fs = DVCFileSystem(str(root), rev=commit)
    required = (paths.metrics, paths.segments, paths.predictions, paths.model)
    try:
        for path in (*required, paths.registry, paths.train):
            destination = into / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get(path.as_posix(), str(destination), recursive=True)
            except FileNotFoundError:
                if path in required:
                    raise
    except DvcException as error:
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
        for path in (paths.metrics, paths.segments, paths.predictions, paths.model, paths.train):
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
    predictions = Predictions.from_frame(outputs.predictions)
    if predictions.problem():
        return  # the gate reports unusable predictions as a failure of its own
    threshold = float(outputs.metrics.get("threshold", 0.5))
    computed = classification_metrics(predictions.label, predictions.probability, threshold)
    for name in names:
        written = outputs.metrics.get(name)
        if isinstance(written, float) and abs(written - computed[name]) > 1e-5:
            raise CompareError(
                f"{side}'s metrics file says {name} {written} but its predictions give "
                f"{computed[name]:.6f}: the outputs are from different runs; run `dvc repro`"
            )


# --- what else the comment shows ----------------------------------------------------------------


def params_diff(root: Path, commit: str) -> dict[str, dict[str, Any]]:
    """Params tracked by the stages that differ between ``commit`` and the workspace."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        result = repo.params.diff(a_rev=commit)
    return dict(result.get("diff", {}))


def gate_rules_changed(root: Path, commit: str) -> bool:
    """Whether the workspace's ``gate:`` section differs from BASE's (the PR moves the bar)."""
    text = git(root, "show", f"{commit}:params.yaml")
    base = (yaml.safe_load(text) or {}).get("gate") if text else None
    return base is not None and base != yaml.safe_load((root / "params.yaml").read_text())["gate"]


def data_md5(root: Path, commit: str, paths: Paths) -> tuple[str | None, str | None]:
    """The data hash in the ``.dvc`` file of ``paths.data`` at ``commit`` and in the workspace."""
    name = paths.data_dvc.as_posix()

    def md5(text: str | None) -> str | None:
        outs = (yaml.safe_load(text) or {}).get("outs") if text else None
        return str(outs[0].get("md5")) if outs else None

    workspace = root / name
    return md5(git(root, "show", f"{commit}:{name}")), md5(
        workspace.read_text() if workspace.exists() else None
    )


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
        model.predict_proba(x)
    for kind, frame, repeats in (("single", row, SINGLE_REPEATS), ("batch", x, BATCH_REPEATS)):
        for _ in range(repeats):
            for name, model in timed.items():
                started = time.perf_counter()
                model.predict_proba(frame)
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


def curve(predictions: pd.DataFrame, kind: str) -> list[float]:
    """A ROC or precision-recall curve on :data:`GRID`, for a chart with evenly spaced x.

    ROC: the best true positive rate at each false positive rate or less. Precision-recall: the
    best precision at each recall or more (interpolated precision).
    """
    y = predictions["label"].to_numpy()
    p = predictions["probability"].to_numpy(dtype=np.float64)
    if kind == "roc":
        points = roc_points(y, p)
        x = np.array([pt["fpr"] for pt in points])
        values = np.array([pt["tpr"] for pt in points])
        reached = x[None, :] <= GRID[:, None]
    else:
        points = pr_points(y, p)
        x = np.array([pt["recall"] for pt in points])
        values = np.array([pt["precision"] for pt in points])
        reached = x[None, :] >= GRID[:, None]
    best = np.where(reached, values[None, :], 0.0).max(axis=1)
    return [round(float(v), 3) for v in best]


def build(root: Path, ref: str, into: Path) -> Report:
    """Compare the workspace's model with BASE's and gather what the comment shows."""
    paths = load_paths(root / "params.yaml")
    params = load_section("gate", GateParams, root / "params.yaml")
    check_workspace(root, paths)
    pr = read_outputs(root, paths)
    base = base_outputs(root, ref, paths, into)
    names = list(params.metrics)
    consistent(pr, names, "the PR")
    if base.outputs is not None:
        consistent(base.outputs, names, "BASE")
    try:
        sides, holdout = same_holdout(root, paths, base, pr, into)
        progress(f"bootstrapping {params.resamples} resamples")
        result = compare(*sides, params, new_holdout=holdout is not None and "rows" in holdout)
    except ValueError as error:
        raise CompareError(f"cannot read the predictions: {error}") from None
    if holdout is not None:
        result = dataclasses.replace(result, notes=[holdout["note"], *result.notes])
    validation_file = root / paths.validation
    return Report(
        base=base,
        gate=result,
        params=params,
        pr=pr,
        params_diff=params_diff(root, base.commit),
        gate_rules_changed=gate_rules_changed(root, base.commit),
        data_md5=data_md5(root, base.commit, paths),
        validation=json.loads(validation_file.read_text()) if validation_file.exists() else None,
        model_stats=model_stats(base.outputs, pr, root / paths.test),
        holdout=holdout,
    )


def same_holdout(
    root: Path, paths: Paths, base: Base, pr: Outputs, into: Path
) -> tuple[tuple[Side | None, Side], dict[str, Any] | None]:
    """The sides to gate: on the same holdout when the data changed and BASE's model can say.

    When BASE's and the PR's test rows differ, BASE's model scores the PR's test rows
    (:mod:`pipelines.review.holdout`). Returns the two sides and what was done: None when the
    rows were the same already (or BASE has no model); ``rows``, ``excluded`` and ``note`` for a
    new holdout; ``fallback`` (why not) and ``note`` for the unpaired fallback.
    """
    if base.outputs is None:
        return (None, pr.side()), None
    if pair(base.outputs.side().predictions, pr.side().predictions)[0] is not None:
        return (base.outputs.side(), pr.side()), None
    progress("the test rows differ: scoring BASE's model on the PR's test rows")
    schema_text = git(root, "show", f"{base.commit}:{paths.schema_.as_posix()}")
    train = into / paths.train
    if schema_text is None or not train.exists():
        missing = paths.schema_ if schema_text is None else paths.train
        holdout, why = None, f"BASE's {missing} could not be read"
    else:
        holdout, why = rescore(
            read_raw(root / paths.raw),
            pr.predictions,
            base_schema=Schema.model_validate(yaml.safe_load(schema_text)),
            pr_schema=load_schema(root / paths.schema_),
            base_train_ids=read_features(train)[2],
            base_model=base.outputs.model,
            thresholds=(
                float(base.outputs.metrics.get("threshold", 0.5)),
                float(pr.metrics.get("threshold", 0.5)),
            ),
        )
    if holdout is None:
        note = f"BASE's model cannot score the PR's test rows: {why}; the bootstrap is unpaired."
        return (base.outputs.side(), pr.side()), {"fallback": why, "note": note}
    sides = (
        Side(Predictions.from_frame(holdout.base), holdout.base_metrics),
        Side(Predictions.from_frame(holdout.pr), holdout.pr_metrics),
    )
    return sides, {"rows": len(holdout.pr), "excluded": holdout.excluded, "note": holdout.note()}


# --- rendering ----------------------------------------------------------------------------------


# A run's page on an MLflow server, as pipelines.stages.register records it
RUN_URL = re.compile(
    r"https?://[\w.-]+(:[0-9]+)?(/[\w.~-]+)*/#/experiments/[0-9]+/runs/[0-9a-f]{32}"
)


def verdict_line(report: Report) -> str:
    """The one-line verdict that opens the comment."""
    gate, base = report.gate, report.base
    against = f"`{cell(base.ref)}` ({base.commit[:7]})"
    if not gate.passed:
        kinds = {
            "regressed beyond tolerance": [
                m.name for m in gate.metrics if m.verdict == "regressed"
            ],
            "outside floor or ceiling": [m.name for m in gate.metrics if m.bound_broken],
            "missing or NaN": [m.name for m in gate.metrics if m.verdict == "invalid"],
        }
        named = [f"{kind}: {', '.join(names)}" for kind, names in kinds.items() if names]
        return f"❌ **Gate failed** against {against}: " + ("; ".join(named) or gate.failures[0])
    if gate.mode == "first model":
        return (
            f"✅ **Gate passed (first model)**: {against} has no model yet, so only the floors "
            "and ceilings apply, and all hold."
        )
    counts = [
        f"{sum(m.verdict == v for m in gate.metrics)} {v}"
        for v in ("improved", "unchanged", "inconclusive")
        if any(m.verdict == v for m in gate.metrics)
    ]
    return (
        f"✅ **Gate passed** against {against}: {', '.join(counts)}; none regressed "
        f"({gate.mode} bootstrap over {gate.rows[0]:,} test rows)."
    )


def _bound(result: MetricResult) -> str:
    rule = result.rule
    if rule.bound is None:
        return "none"
    text = f"{'≥' if rule.better == 'higher' else '≤'} {rule.bound}"
    return f"❌ {text}" if result.bound_broken else text


def metrics_table(report: Report) -> list[str]:
    """The gated metrics: base, PR, difference, its interval, and the verdict."""
    gate = report.gate
    share = f"{gate.confidence:.0%}"
    lines = [
        f"| metric | better | base | PR | Δ | {share} interval of Δ | tolerance | bound "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in gate.metrics:
        interval = (
            "n/a"
            if m.low is None or m.high is None
            else f"{number(m.low, 4, True)} to {number(m.high, 4, True)}"
        )
        lines.append(
            f"| {m.name} | {m.rule.better} | {number(m.base)} | {number(m.pr)} "
            f"| {number(m.delta, 6, True)} | {interval} | ±{m.rule.tolerance} | {_bound(m)} "
            f"| {ICONS[m.verdict]} |"
        )
    how = (
        f"{report.params.resamples:,} resamples of the same {gate.rows[0]:,} test rows, "
        "paired by id"
        if gate.mode in ("paired", "paired on new holdout")
        else f"{report.params.resamples:,} resamples of each side's test rows, drawn independently"
    )
    values = (
        "Base and PR values are both measured on the PR's test rows that BASE did not train on."
        if gate.mode == "paired on new holdout"
        else "Base and PR values are those of the metrics files."
    )
    lines += [
        "",
        f"{values} Bootstrap ({gate.mode}): {how}, "
        f"seed {report.params.seed}. *regressed*: the whole interval is worse than the "
        "tolerance; *improved*: the whole interval is better than 0; *unchanged*: the interval "
        "lies within ± the tolerance; *inconclusive*: otherwise (does not fail the gate).",
    ]
    return lines


def chart(title: str, x_label: str, y_label: str, lines: list[list[float]]) -> list[str]:
    """A Mermaid ``xychart-beta`` line chart over :data:`GRID` (grey: base, orange: PR)."""
    palette = "#9e9e9e, #e8590c" if len(lines) == 2 else "#e8590c"
    return [
        "```mermaid",
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + palette + '"}}}}%%',
        "xychart-beta",
        f'    title "{title}"',
        f'    x-axis "{x_label}" 0 --> 1',
        f'    y-axis "{y_label}" 0 --> 1',
        *[f"    line [{', '.join(f'{v:.3f}' for v in line)}]" for line in lines],
        "```",
    ]


def curves(report: Report) -> list[str]:
    """ROC and precision-recall curves of base and PR, drawn inline."""
    frames = [o.predictions for o in (report.base.outputs, report.pr) if o is not None]
    legend = "grey: base, orange: PR" if len(frames) == 2 else "orange: PR"
    lines = [f"#### Curves ({legend})", ""]
    lines += chart(
        "ROC", "False positive rate", "True positive rate", [curve(f, "roc") for f in frames]
    )
    lines.append("")
    lines += chart("Precision-recall", "Recall", "Precision", [curve(f, "pr") for f in frames])
    return lines


def params_section(report: Report) -> list[str]:
    """Params that differ from BASE (``dvc params diff``)."""
    lines = ["#### Params changed", ""]
    if report.gate_rules_changed:
        lines += ["⚠️ **This PR changes the gate's own rules** (`gate:` in params.yaml).", ""]
    rows = [
        (f"{file}: {name}" if len(report.params_diff) > 1 else name, change)
        for file, changes in report.params_diff.items()
        for name, change in changes.items()
    ]
    if not rows:
        return [*lines, "None of the params the stages read changed."]
    lines += ["| param | base | PR |", "|---|---|---|"]
    lines += [
        f"| {cell(name)} | {cell(change.get('old'))} | {cell(change.get('new'))} |"
        for name, change in rows[:MAX_TABLE_ROWS]
    ]
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"\n… and {len(rows) - MAX_TABLE_ROWS} more (`dvc params diff`).")
    return lines


def data_section(report: Report) -> list[str]:
    """Whether the data changed and what validation said about it."""
    before, after = report.data_md5
    if before == after:
        changed = f"unchanged (md5 `{cell(after)}`)"
    else:
        changed = f"**changed**: md5 `{cell(before)}` → `{cell(after)}`"
    lines = ["#### Data", "", f"- Raw data: {changed}."]
    validation = report.validation
    if validation is None:
        lines.append("- Validation: no result found.")
        return lines
    stats = (validation.get("result") or {}).get("statistics") or {}
    passed, total = stats.get("successful_expectations"), stats.get("evaluated_expectations")
    if validation.get("success"):
        lines.append(f"- Validation: ✅ passed ({passed} of {total} expectations).")
    else:
        lines.append(f"- Validation: ❌ **failed** ({passed} of {total} expectations passed):")
        lines += [
            f"  - {cell(f.get('column') or 'table')}: {cell(f.get('rule'), 120)}"
            for f in (validation.get("failures") or [])[:MAX_TABLE_ROWS]
        ]
    return lines


def segment_rows(report: Report) -> list[tuple[float, list[str]]]:
    """Rows of the segment table with their largest absolute change, for sorting."""
    base = report.base.outputs.segments if report.base.outputs is not None else {}
    rows = []
    for column, values in report.pr.segments.items():
        for value, pr in values.items():
            old = (base.get(column) or {}).get(value) or {}
            changes = [
                pr.get(k) - old.get(k)
                for k in ("roc_auc", "f1")
                if isinstance(pr.get(k), float) and isinstance(old.get(k), float)
            ]
            largest = max((abs(c) for c in changes), default=0.0)
            cells = [f"{cell(column)} = {cell(value)}", f"{pr.get('rows', 0):,}"]
            for k in ("roc_auc", "f1"):
                before, after = old.get(k), pr.get(k)
                delta = (
                    after - before
                    if isinstance(after, float) and isinstance(before, float)
                    else None
                )
                cells += [number(before, 4), number(after, 4), number(delta, 4, True)]
            rows.append((largest, cells))
    return sorted(rows, key=lambda r: -r[0])


def segments_section(report: Report) -> list[str]:
    """Segment metrics, the largest changes first."""
    rows = segment_rows(report)
    lines = [
        "#### Segments (largest changes first)",
        "",
        "| segment | rows | ROC AUC base | PR | Δ | F1 base | PR | Δ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows[:MAX_TABLE_ROWS]]
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"\n… and {len(rows) - MAX_TABLE_ROWS} more segments.")
    return lines


def model_section(report: Report) -> list[str]:
    """Size, latency and MLflow identity of each model."""
    stats = report.model_stats
    sides = [s for s in ("base", "pr") if s in stats]
    headers = {"base": "base", "pr": "PR"}
    rows_count = stats["pr"]["rows"] if "pr" in stats else 0

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:.2f} ms"

    lines = [
        "#### Model",
        "",
        "| | " + " | ".join(headers[s] for s in sides) + " |",
        "|---" * (len(sides) + 1) + "|",
        "| size of the model files | "
        + " | ".join(f"{stats[s]['bytes']:,} bytes" for s in sides)
        + " |",
        f"| latency, 1 row (median of {SINGLE_REPEATS}) | "
        + " | ".join(ms(stats[s]["single"]) for s in sides)
        + " |",
        f"| latency, {rows_count:,} rows (median of {BATCH_REPEATS}) | "
        + " | ".join(ms(stats[s]["batch"]) for s in sides)
        + " |",
    ]
    registries = {"base": report.base.outputs, "pr": report.pr}
    for label, key in (("MLflow run", "run_id"), ("registered version", "model_uri")):
        values = []
        for s in sides:
            outputs = registries[s]
            registry = outputs.registry if outputs is not None else None
            value = f"`{cell(registry[key])}`" if registry and key in registry else "n/a"
            url = str(registry.get("run_url", "")) if registry and key == "run_id" else ""
            # The PR's registry.json is untrusted: only a run page on an http(s) server links
            values.append(f"[{value}]({url})" if RUN_URL.fullmatch(url) else value)
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def render(report: Report) -> str:
    """The pull-request comment: verdict first, then the evidence."""
    base = report.base
    source = {
        "DVC": "from DVC (its dvc.lock, the cache or the remote)",
        "reproduced": "reproduced from its code and data in a temporary worktree",
        "none": "none: it has no model yet",
    }[base.source]
    sections = [
        [verdict_line(report)],
        [f"- {cell(failure, 300)}" for failure in report.gate.failures],
        metrics_table(report),
        [f"> **Note:** {note}" for note in report.gate.notes],
        curves(report),
        params_section(report),
        data_section(report),
        segments_section(report),
        card_changes(
            None if base.outputs is None else (base.outputs.metrics, base.outputs.segments),
            (report.pr.metrics, report.pr.segments),
        ),
        model_section(report),
        [f"<sub>Base outputs of `{cell(base.ref)}` ({base.commit[:12]}): {source}.</sub>"],
    ]
    return fit("\n\n".join("\n".join(s) for s in sections if s))


def render_error(ref: str, reason: str) -> str:
    """The comment when the models could not be compared."""
    return fit(
        f"⚠️ **Could not compare** with `{cell(ref)}`: {cell(reason, 2000)}\n\n"
        "The gate fails until this is fixed."
    )


def fit(body: str) -> str:
    """End the comment with the marker, cut to :data:`MAX_CHARS` if it would be longer."""
    ending = f"\n\n{MARKER}\n"
    if len(body) + len(ending) > MAX_CHARS:
        body = body[: MAX_CHARS - len(ending) - 40] + "\n\n… (cut to fit a GitHub comment)"
    text = body + ending
    assert len(text) <= MAX_CHARS, "the comment must fit in one GitHub comment"  # noqa: S101
    return text


def gate_document(report: Report) -> dict[str, Any]:
    """The machine-readable verdict."""
    gate = report.gate

    def finite(value: float | None) -> float | None:
        return round(value, 6) if value is not None and math.isfinite(value) else None

    return {
        "verdict": "pass" if gate.passed else "fail",
        "exit_code": 0 if gate.passed else 1,
        "reason": None if gate.passed else "; ".join(gate.failures),
        "base": {
            "ref": report.base.ref,
            "commit": report.base.commit,
            "source": report.base.source,
        },
        "mode": gate.mode,
        "rows": {"pr": gate.rows[0], "base": gate.rows[1]},
        "holdout": report.holdout,
        "failures": gate.failures,
        "notes": gate.notes,
        "bootstrap": {
            "resamples": report.params.resamples,
            "seed": report.params.seed,
            "confidence": report.params.confidence,
        },
        "metrics": {
            m.name: {
                "better": m.rule.better,
                "base": finite(m.base),
                "pr": finite(m.pr),
                "delta": finite(m.delta),
                "low": finite(m.low),
                "high": finite(m.high),
                "tolerance": m.rule.tolerance,
                "floor": m.rule.floor,
                "ceiling": m.rule.ceiling,
                "bound_broken": m.bound_broken,
                "verdict": m.verdict,
            }
            for m in gate.metrics
        },
        "params_changed": report.params_diff,
        "gate_rules_changed": report.gate_rules_changed,
    }


def gate_summary(document: dict[str, Any], limit: int = 300) -> str:
    """One line of a ``gate.json`` (:func:`gate_document`, or the error document of :func:`main`).

    What release.yml records on the image as its ``gate_verdict`` label, and ``make trace`` prints.
    """
    base = document.get("base") or {}
    against, commit = str(base.get("ref") or "?"), str(base.get("commit") or "")
    if commit and not commit.startswith(against):  # a branch name, not (part of) the commit
        against += f" ({commit[:12]})"
    line = f"{document.get('verdict', 'unknown')} against {against}"
    if document.get("verdict") == "pass":
        verdicts = [m.get("verdict") for m in (document.get("metrics") or {}).values()]
        counts = [f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts)]
        line += f", {document.get('mode')}: " + ", ".join(counts)
    elif document.get("reason"):
        line += f": {document['reason']}"
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    """Compare, write the comment and the verdict, and exit 0 (pass), 1 (fail) or 2 (error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--comment", type=Path, required=True, metavar="PATH")
    parser.add_argument("--json", type=Path, required=True, metavar="PATH")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        try:
            report = build(Path.cwd(), args.base, Path(scratch) / "base")
        except (PipelineError, OSError, ValueError) as error:
            reason = " ".join(str(error).split())
            comment = render_error(args.base, reason)
            write_atomically(args.comment, lambda p: p.write_text(comment))
            document = {
                "verdict": "error",
                "exit_code": 2,
                "reason": reason,
                "base": {"ref": args.base},
            }
            write_json(args.json, document)
            print(f"error: could not compare with {args.base}: {reason}", file=sys.stderr)
            return 2
    comment = render(report)
    write_atomically(args.comment, lambda p: p.write_text(comment))
    write_json(args.json, gate_document(report))
    print(verdict_line(report))
    print(f"wrote {args.comment} and {args.json}")
    return 0 if report.gate.passed else 1


if __name__ == "__main__":
    sys.exit(main())
