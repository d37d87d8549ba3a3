"""The first commit of a new model repository (copier's task, run inside the new repository).

From the answers copier wrote (``.copier-answers.yml``): the table into ``data/`` (tracked by
DVC, with a ``row_id`` when it had no id), ``schema.yaml`` inferred from it, the example-specific
params reset for this table and ``uv.lock`` for the new project name, committed; the pipeline
run once from that commit (``make run``: the first model names it); then the gate's floors and
ceilings set from that model, the README's summary and a second commit: the baseline that the
first pull request is compared with.

Usage: ``python -m pipelines.template.bootstrap`` in the new repository (copier runs it).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError, run_stage
from pipelines.core.metrics import BETTER, VALUE
from pipelines.core.value import neutral_section
from pipelines.params import load_paths
from pipelines.schema import Schema, columns_of, dump_schema
from pipelines.template.table import Table, check_table, data_file, read_table

ANSWERS = Path(".copier-answers.yml")
SUMMARY = "<!-- model summary: written by make new-model -->"
STORE = "dvc-store"  # the DVC remote committed with a small table (see store_data)
STORE_MAX_BYTES = 50_000_000  # GitHub warns about files over 50 MB
MAX_SEGMENTS = 2
MAX_SEGMENT_CATEGORIES = 10
# How far below (above) the first model's value a metric's floor (ceiling) is set, in the metric's
# units. The paired comparison with the base branch is what judges a pull request; the bounds only
# stop a model that collapses. Tolerances stay the template's (metric units, table-independent).
MARGINS = {"roc_auc": 0.05, "pr_auc": 0.05, "f1": 0.05, "log_loss": 0.05, "brier": 0.02, "r2": 0.1}
RELATIVE = ("rmse", "mae", "abs_error_p50", "abs_error_p90")
# A regression's errors are in the target's units: their ceiling sits this share above the first
# model's, and their tolerance is this share of it (another seed stays well within 2%).
RELATIVE_MARGIN = 0.25
RELATIVE_TOLERANCE = 0.02
# What the gate and the card judge a model of each task by (a binary model: params.yaml's own).
GATED: dict[str, dict[str, float | None]] = {  # metric: tolerance (None: relative)
    "multiclass": {
        "log_loss": 0.02,
        "macro_f1": 0.03,
        "roc_auc_ovr": 0.01,
        "balanced_accuracy": 0.03,
    },
    "regression": {"rmse": None, "mae": None, "r2": 0.02, "coverage": 0.05},
}
SEGMENT_METRICS = {"multiclass": ["macro_f1", "accuracy"], "regression": ["rmse", "mae"]}
# dvc.yaml's plots whose data a model of the task does not write (ROC and precision-recall
# curves are a binary model's; a regression's predictions have no predicted class)
NOT_PLOTTED = {
    "multiclass": ("ROC", "Precision-recall"),
    "regression": ("ROC", "Precision-recall", "Confusion matrix"),
}


def say(message: str) -> None:
    """One progress line, at once (a copier task's output is not a terminal)."""
    print(f"--- {message}", flush=True)


def run(*command: str, env: dict[str, str] | None = None) -> None:
    """Run a command in the new repository; stop with its output when it fails."""
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise PipelineError(f"`{' '.join(command)}` exited {done.returncode} (see above)")


def segments(schema: Schema) -> list[str]:
    """Columns to report metrics per group: the first categorical ones with a few categories."""
    return [
        name
        for name, feature in schema.features.items()
        if feature.type == "category"
        and 2 <= len(feature.categories or ()) <= MAX_SEGMENT_CATEGORIES
    ][:MAX_SEGMENTS]


def gate_bounds(
    metrics: dict[str, float], better: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Floors (higher is better) and ceilings (lower is better) a margin from the first model.

    Rounded outward to two decimals; a floor never goes below 0.
    """
    bounds: dict[str, dict[str, float]] = {}
    for metric, direction in better.items():
        value, margin = metrics[metric], MARGINS.get(metric, 0.05)
        if direction == "higher":
            bounds[metric] = {"floor": max(0.0, math.floor((value - margin) * 100) / 100)}
        elif metric in RELATIVE:
            bounds[metric] = {"ceiling": _two_digits(value * (1 + RELATIVE_MARGIN), up=True)}
        else:
            bounds[metric] = {"ceiling": math.ceil((value + margin) * 100) / 100}
    return bounds


def _two_digits(value: float, up: bool) -> float:
    """``value`` rounded outward to two significant digits."""
    if value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return round((math.ceil if up else math.floor)(value / step) * step, 10)


def task_rules(task: str, metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The gate's rules for a model of ``task`` from its first model's metrics.

    A binary model keeps params.yaml's metrics (their tolerances are the template's); a
    multiclass or regression model gets :data:`GATED`'s, a regression's error tolerances a
    share of the first model's error.
    """
    rules = {}
    for metric, fixed in GATED[task].items():
        relative = _two_digits(metrics[metric] * RELATIVE_TOLERANCE, up=True)
        rules[metric] = {"tolerance": relative if fixed is None else fixed}
    return rules


def drop_plots(path: Path, titles: tuple[str, ...]) -> None:
    """Remove plot definitions from dvc.yaml, keeping the rest of the file as it is."""
    lines = path.read_text().splitlines(keepends=True)
    kept, skipping = [], False
    for line in lines:
        if line.startswith("  - ") and line.strip().endswith(":"):
            skipping = line.strip()[2:-1] in titles
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    path.write_text("".join(kept))


def edit_params(path: Path, changes: dict[tuple[str, ...], Any]) -> None:
    """Set keys of params.yaml in place, keeping its comments and layout."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 100
    document = yaml_rt.load(path.read_text())
    for keys, value in changes.items():
        node = document
        for key in keys[:-1]:
            node = node[key]
        if isinstance(value, list):
            # Column names may hold spaces, '?', ':' or non-ASCII letters: quote all but plain words
            listed = CommentedSeq(
                v
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(v))
                else DoubleQuotedScalarString(v)
                for v in value
            )
            listed.fa.set_flow_style()  # short lists stay on one line, as the file writes them
            node[keys[-1]] = listed
        else:
            node[keys[-1]] = value
    stream = io.StringIO()
    yaml_rt.dump(document, stream)
    # A replaced section loses the blank line that separated it from the next one
    lines = stream.getvalue().splitlines(keepends=True)
    for i in range(len(lines) - 1, 0, -1):
        previous = lines[i - 1]
        if re.match(r"[a-z_]+:", lines[i]) and previous.strip() and not previous.startswith("#"):
            lines.insert(i, "\n")
    text = "".join(lines)
    if yaml.safe_load(text) is None:  # what every stage will read: it must parse
        raise PipelineError(f"{path} came out empty")
    path.write_text(text)


def fairness_section(schema: Schema) -> dict[str, Any] | None:
    """``fairness:`` for the audit columns (none: no audit): their groups reported, no bounds.

    Which gap is too wide is the owner's to say (``max_gap``); until then the gate judges none.
    """
    if not schema.audit:
        return None
    return {
        "sensitive": list(schema.audit),
        "min_group_rows": 50,
        "max_gap": {},
        "resamples": 1000,
        "seed": 0,
        "confidence": 0.95,
    }


def feature_table(schema: Schema) -> str:
    """The schema as a Markdown table: what a reviewer checks first."""
    lines = ["| column | type | allowed values | missing allowed |", "|---|---|---|---|"]
    for name, feature in schema.features.items():
        if feature.type == "category":
            allowed = ", ".join(f"`{c}`" for c in feature.categories or ())
        else:
            allowed = f"{feature.min:g} to {feature.max:g}"
        missing = f"up to {feature.max_null_fraction:.0%}" if feature.nullable else "no"
        lines.append(f"| `{name}` | {feature.type} | {allowed} | {missing} |")
    return "\n".join(lines)


def summary(table: Table, data: str, metrics: dict[str, float], gate: dict[str, Any]) -> str:
    """The README's generated section: the data, the schema, the first model and its gate."""
    schema = table.schema
    gated = ", ".join(
        f"{m} {'≥' if 'floor' in b else '≤'} {b.get('floor', b.get('ceiling'))}"
        for m, b in gate.items()
    )
    scores = ", ".join(f"{m} {metrics[m]:.3f}" for m in gate)
    how_id = (
        f"`{table.id}` was added: the row's number in the original file (1, 2, ...), stored in "
        "the data, so it never changes for a row"
        if table.id_added
        else f"`{table.id}`"
    )
    return "\n".join(
        [
            SUMMARY,
            f"- **Data:** `{data}`, {table.rows:,} rows, tracked by DVC (`data.dvc`).",
            f"- **Target:** `{schema.target.column}`, {target_text(table)}.",
            f"- **Id:** {how_id}.",
            f"- **First model:** {scores} on the test split (`eval/metrics.json`).",
            f"- **Gate bounds** (`gate:` in `params.yaml`): {gated}.",
            "",
            feature_table(schema),
        ]
    )


def target_text(table: Table) -> str:
    """What the README says of the target: the task, its classes."""
    target = table.schema.target
    if table.task == "binary":
        return f"binary, positive class `{target.positive}`"
    if table.task == "multiclass":
        return (
            f"multiclass, {len(target.labels)} classes ("
            + ", ".join(f"`{c}`" for c in target.labels)
            + ")"
        )
    return "regression (a number; predictions come with an interval)"


def store_data(raw: Path) -> None:
    """Give DVC a default remote inside the repository, when the table is small enough for git.

    A fresh clone, and so CI, then gets the data with ``make data``: no credentials, no network.
    A larger or private table needs a real remote (``dvc remote add -d storage s3://...``).
    """
    size = raw.stat().st_size
    if size > STORE_MAX_BYTES:
        print(
            f"warning: {raw} has {size / 1e6:.0f} MB, too much for git: add a DVC remote "
            "(`dvc remote add -d storage s3://...`, `dvc push`) before a clone or CI can get it"
        )
        return
    say(f"DVC remote `{STORE}` inside the repository, so that a fresh clone and CI get the data")
    dvc = (sys.executable, "-m", "dvc")
    run(*dvc, "remote", "add", "--default", "--quiet", "repository", STORE)
    run(*dvc, "push", "--quiet")


def main() -> int:
    """Write the model's data, schema and params, run the pipeline, commit the baseline."""
    started = time.monotonic()
    answers = yaml.safe_load(ANSWERS.read_text())
    name = answers["name"]
    source = Path(answers["data"])
    table = check_table(
        read_table(source),
        answers["target"],
        answers.get("positive") or "",
        answers.get("id") or "",
        answers.get("task") or "",
        audit=columns_of(answers.get("audit") or ""),
    )
    say(f"task: {table.task}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    run("git", "init", "-q", "-b", "main")

    raw = Path("data") / data_file(source)
    say(f"data: {raw} ({table.rows:,} rows) and schema.yaml")
    raw.parent.mkdir(exist_ok=True)
    table.frame.to_csv(raw, index=False)
    Path("schema.yaml").write_text(dump_schema(table.schema))
    edit_params(
        Path("params.yaml"),
        {
            ("paths", "raw"): str(raw),
            ("data",): {},
            ("evaluate", "segments"): segments(table.schema),
            # what decisions are worth is the owner's to state (docs/value.md): until then a
            # correct decision gains 1, and the threshold is a probability
            ("value",): neutral_section(table.task, table.schema.target.labels),
            ("train", "threshold"): 0.5,
            # the groups to audit are the owner's to name (docs/fairness.md): AUDIT's, if any
            ("fairness",): fairness_section(table.schema),
            ("register", "experiment"): name,
            ("register", "model_name"): name,
        }
        | (
            {("card", "segment_metrics"): SEGMENT_METRICS[table.task]}
            if table.task in SEGMENT_METRICS
            else {}
        ),
    )
    if table.task in NOT_PLOTTED:
        drop_plots(Path("dvc.yaml"), NOT_PLOTTED[table.task])
    say("uv.lock for the new project name")
    uv = env.get("UV") or "uv"
    if subprocess.run([uv, "lock", "--offline", "--quiet"], check=False).returncode != 0:
        run(uv, "lock", "--quiet")
    run(sys.executable, "-m", "dvc", "add", "--quiet", "data")
    store_data(raw)
    # The first model is trained from a commit, so its registry record and /predict name it
    commit(f"New model {name}: the template, data, schema and params")

    say("the first run: make run (environment, data check, every stage)")
    run("make", "--no-print-directory", "run", env=env)
    say("deploy/monitoring: Prometheus rules and the Grafana dashboard for the model's name")
    run("make", "--no-print-directory", "monitoring", env=env)

    paths = load_paths()
    metrics = json.loads(paths.metrics.read_text())
    rules = (
        {  # the example's own rules; value is gated once the owner states a value model
            m: r
            for m, r in yaml.safe_load(Path("params.yaml").read_text())["gate"]["metrics"].items()
            if m != VALUE
        }
        if table.task == "binary"
        else task_rules(table.task, metrics)
    )
    better = {m: BETTER[m] for m in rules}
    bounds = gate_bounds(metrics, better)
    changes: dict[tuple[str, ...], Any] = {
        ("gate", "metrics"): {m: rules[m] | bounds[m] for m in rules}
    }
    edit_params(Path("params.yaml"), changes)
    readme = Path("README.md")
    readme.write_text(
        readme.read_text().replace(SUMMARY, summary(table, str(raw), metrics, bounds))
    )

    commit(f"The baseline of {name}: its first model's lock, metrics and gate bounds")
    seconds = time.monotonic() - started
    print(f"\n{name}: the first model, committed as the baseline ({seconds:.0f} s)")
    width = max(map(len, better), default=0)
    print("\n".join(f"  {m:<{width}}  {metrics[m]:.4f}" for m in better))
    print(
        f"\nWritten: {raw} (DVC; its remote {STORE}/ when small), schema.yaml, params.yaml "
        "(paths, segments, names, gate bounds), README.md, dvc.lock, eval/, uv.lock, "
        "deploy/monitoring/\n"
        "Next:\n"
        "  1. review schema.yaml (ranges, categories, missing values) and the gate in params.yaml\n"
        "  2. make test\n"
        "  3. git remote add origin <url> && git push -u origin main\n"
    )
    return 0


def commit(message: str) -> None:
    """Commit everything, as the user when git knows them, else as ``make new-model``."""
    run("git", "add", "-A")
    identity = (
        []
        if _git_identity()
        else ["-c", "user.name=make new-model", "-c", "user.email=new-model@localhost"]
    )
    run("git", *identity, "commit", "-q", "-m", message)


def _git_identity() -> bool:
    done = subprocess.run(["git", "config", "user.email"], capture_output=True, check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


if __name__ == "__main__":
    run_stage(main)
