"""``make monitor``: the batch drift and quality report of served rows.

The comparison (:mod:`pipelines.monitoring.compare`) gives every feature's and the score's PSI
(and a multiclass model's predicted class's) against its threshold, the rule of the Prometheus
alerts, and the model's estimated and realised quality per task (a binary model's expected
confusion matrix, a multiclass model's expected accuracy and class shares, a regression's metrics
only from labels) and, with late labels, realised value against expected and realised rates
per sensitive group (:mod:`pipelines.monitoring.outcomes`); this module writes it as markdown
in the style of the pull-request comment (verdict first, a table sorted by PSI over threshold,
Mermaid charts of what drifts) and as JSON.

Usage: ``python -m pipelines.monitoring.monitor ROWS [--labels CSV] --markdown reports/monitor.md
--json reports/monitor.json`` (``make monitor ROWS=... [LABELS=...]``). Exit 0: no drift;
1: drift; 2: could not compare (why is printed in one line and written to both files). A
realised fairness gap above its bound is reported first and in the JSON, but is not drift.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core import xychart
from pipelines.core.drift import MISSING, OTHER, Binning
from pipelines.core.formatting import cell, number
from pipelines.core.io import PipelineError, write_atomically, write_json
from pipelines.core.metrics import BETTER
from pipelines.monitoring import outcomes, quality
from pipelines.monitoring.compare import PREDICTED, SCORE, Drift, Monitor, build
from pipelines.params import load_paths

MAX_CHARTS = 12
NAMED = (
    "reference",
    "model",
    "schema",
    "metrics",
    "predictions",
    "fairness",
)  # paths.* to override
ORANGE, GREY = xychart.ORANGE, xychart.GREY


def _names(drifts: list[Drift]) -> str:
    return ", ".join(f"`{cell(d.name)}`" for d in drifts)


def verdict_line(monitor: Monitor) -> str:
    """The one-line verdict that opens the report."""
    n = f"{monitor.rows:,} served rows"
    total = len(monitor.features)
    if monitor.exit_code == 2:
        return (
            f"⚠️ **No verdict**: {n}, fewer than `monitor.min_rows` ({monitor.params.min_rows:,})"
            ": collect rows over a longer period and run `make monitor` again."
        )
    drifting = monitor.drifting
    outputs = " and ".join(_OUTPUT_NAMES[d.name] for d in monitor.outputs if d.drift)
    if drifting:
        features = [d for d in drifting if not _is_output(monitor, d)]
        if not features:
            return f"🔴 **Drift** of {outputs} over {n}; no feature drifts on its own."
        named = f"{len(features)} of {total} features ({_names(features)})"
        return f"🔴 **Drift** in {named}{' and ' + outputs if outputs else ''} over {n}."
    watched = "the score nor the predicted class" if monitor.predicted is not None else "the score"
    return (
        f"🟢 **No drift**: none of {total} features nor {watched} crosses its PSI threshold "
        f"over {n}."
    )


def _is_output(monitor: Monitor, drift: Drift) -> bool:
    """Whether ``drift`` is the score's or the predicted class's (a feature may share a name)."""
    return any(drift is output for output in monitor.outputs)


_OUTPUT_NAMES = {SCORE: "the model's score", PREDICTED: "the model's predicted class"}


def _status(drift: Drift) -> str:
    status = "🔴 drift" if drift.drift else "🟢 stable"
    if drift.ks_threshold is not None and drift.ks > drift.ks_threshold:
        status += " (KS above critical)"
    return status


def drift_table(monitor: Monitor) -> list[str]:
    """Features, the score and a multiclass model's predicted class, by PSI over its threshold."""
    rows = sorted([*monitor.features, *monitor.outputs], key=lambda d: -d.ratio)
    lines = [
        "| feature | kind | PSI | threshold | PSI / threshold | KS | KS critical | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in rows:
        name = f"**{d.name}** (model)" if _is_output(monitor, d) else cell(d.name)
        critical = number(d.ks_threshold, 4) if d.ks_threshold is not None else "n/a"
        lines.append(
            f"| {name} | {d.kind} | {number(d.psi, 4)} | {number(d.threshold, 4)} "
            f"| {number(d.ratio, 2)} | {number(d.ks, 4)} | {critical} | {_status(d)} |"
        )
    p = monitor.params
    m = (
        monitor.features[0].distribution.rows
        if monitor.features
        else monitor.score.distribution.rows
    )
    tests = len(monitor.features) + len(monitor.outputs)
    test_rows = (
        "the score and the predicted class" if monitor.predicted is not None else "the score"
    )
    lines += [
        "",
        f"Threshold per feature: max({p.psi_floor}, (1/N + 1/M) · χ²(1 - a, bins - 1)) for "
        f"N = {monitor.rows:,} served and M = {m:,} reference rows "
        f"({monitor.score.distribution.rows:,} test rows for {test_rows}), a = "
        f"{p.false_alarm_rate} / {tests} tests: the rule of the Prometheus alerts. Rows "
        f"without drift cross some feature's threshold with probability at most "
        f"{p.false_alarm_rate}. KS is reported beside PSI; the verdict is PSI's.",
    ]
    return lines


def _row(label: str, values: list[float | None]) -> str:
    return f"| {label} | " + " | ".join(number(v, 4) for v in values) + " |"


NO_LABELS = "No late labels given (`LABELS=<csv of id,label>`)."
NEEDS_LABELS = (
    "A regression's quality needs labels: its predictions say nothing of their own errors. "
    "Give `LABELS=<csv of id,label>` to measure RMSE, MAE, R² and the intervals' coverage."
)


def realised_section(monitor: Monitor) -> list[str]:
    """The realised metrics of the labelled rows against the test rows and the gate's bounds."""
    realised, test = monitor.realised, monitor.test_metrics
    if realised is None:
        return [NEEDS_LABELS if monitor.task == "regression" else NO_LABELS]
    lines = [
        f"Realised, from late labels: {realised.matched:,} served rows matched, "
        f"{realised.unmatched:,} without a label; {realised.unused:,} labels name no served row.",
    ]
    if realised.filled:
        lines[0] += (
            f" {realised.filled:,} of them were served without an interval: it is taken as the "
            f"prediction ± {number(realised.half_width, 4)}, as the model serves it."
        )
    lines += [
        "",
        "| metric | served (realised) | test rows | gate bound |",
        "|---|---|---|---|",
    ]
    for name in (n for n in BETTER if n in realised.metrics):
        bound = realised.bounds.get(name)
        rule = "none"
        if bound is not None:
            rule = f"{'≥' if bound['better'] == 'higher' else '≤'} {bound['bound']}"
            rule = f"❌ {rule}" if bound["broken"] else f"✅ {rule}"
        value = realised.metrics.get(name)
        lines.append(f"| {name} | {number(value, 4)} | {number(test.get(name), 4)} | {rule} |")
    return lines


def binary_estimate(monitor: Monitor) -> list[str]:
    """A binary model's expected confusion matrix and metrics, served and on the test rows."""
    e, test, te = monitor.estimated or {}, monitor.test_metrics, monitor.test_estimated or {}
    lines = [
        f"#### Quality at threshold {monitor.threshold}",
        "",
        "Estimated from the scores, taken as calibrated probabilities (expected confusion "
        f"matrix: TP {e['tp']:,.1f}, FP {e['fp']:,.1f}, FN {e['fn']:,.1f}, TN {e['tn']:,.1f}).",
        "",
        "| metric | served (estimated) | test rows (estimated) | test rows (measured) |",
        "|---|---|---|---|",
    ]
    return lines + [
        _row(name, [e[name], te.get(name), test.get(name)])
        for name in (*quality.ESTIMATED, "predicted_positive_rate")
    ]


def multiclass_estimate(monitor: Monitor) -> list[str]:
    """A multiclass model's expected accuracy and class shares, served and on the test rows."""
    e, test, te = monitor.estimated or {}, monitor.test_metrics, monitor.test_estimated or {}
    lines = [
        "#### Quality",
        "",
        "Estimated from the class probabilities, taken as calibrated: a row is classified right "
        "with its top probability, so the expected accuracy is their mean; the expected log loss "
        "is their mean entropy; a class's expected share of the rows is its mean probability. "
        "The other metrics need labels.",
        "",
        "| metric | served (estimated) | test rows (estimated) | test rows (measured) |",
        "|---|---|---|---|",
        *[
            _row(name, [e[name], te.get(name), test.get(name)])
            for name in quality.ESTIMATED_CLASSES
        ],
        "",
        "| class | expected share (served) | expected share (test rows) "
        "| predicted share (served) | predicted share (test rows) |",
        "|---|---|---|---|---|",
    ]
    for c in monitor.classes:
        share, predicted = f"{quality.SHARE}{c}", f"{quality.PREDICTED_SHARE}{c}"
        values = [e[share], te.get(share), e[predicted], te.get(predicted)]
        lines.append(_row(cell(c), values))
    return lines


def quality_section(monitor: Monitor) -> list[str]:
    """Estimated quality where the task's outputs give one, and realised quality from labels."""
    if monitor.task == "binary":
        lines = binary_estimate(monitor)
    elif monitor.task == "multiclass":
        lines = multiclass_estimate(monitor)
    else:
        lines = ["#### Quality"]
    return [*lines, "", *realised_section(monitor)]


def bin_names(binning: Binning) -> list[str]:
    """Readable bin names: value ranges of a numeric feature, categories otherwise."""
    if binning.kind == "categorical":
        return [*binning.categories, OTHER, MISSING]
    edges = [f"{e:.4g}" for e in binning.edges]
    if not edges:
        return ["all values", MISSING]
    middle = [f"{low} to {high}" for low, high in itertools.pairwise(edges)]
    return [f"≤ {edges[0]}", *middle, f"> {edges[-1]}", MISSING]


def chart(drift: Drift) -> list[str]:
    """A horizontal Mermaid bar chart of the served fractions (orange) against the reference (grey).

    One row per bin, so that a bin's name (a long category, a value range) has the chart's width
    to itself; names longer than :data:`xychart.MAX_LABEL` are cut, and then a table under the
    chart gives each bin's full name and both shares.
    """
    reference = np.asarray(drift.distribution.fractions)
    top = float(max(reference.max(initial=0), drift.served.max(initial=0), 0.01))
    bins = bin_names(drift.distribution.binning)
    names = [xychart.shorten(n) for n in bins]
    lines = [
        "```mermaid",
        xychart.init(f"{ORANGE}, {GREY}", xychart.horizontal_height(len(names))),
        "xychart-beta horizontal",
        f'    title "{xychart.shorten(drift.name, xychart.MAX_TITLE - 15)}: served vs reference"',
        f"    x-axis [{xychart.quoted(names)}]",
        # in percent: ticks of a few characters, where shares of 0.005 steps would crowd
        f'    y-axis "% of rows" 0 --> {min(100.0, top * 110):.1f}',
        f"    bar [{', '.join(f'{100 * v:.2f}' for v in drift.served)}]",
        f"    line [{', '.join(f'{100 * v:.2f}' for v in reference)}]",
        "```",
    ]
    if names != [n.replace('"', "'") for n in bins]:
        lines += ["", "| bin | served | reference |", "|---|---:|---:|"]
        lines += [
            f"| {cell(n)} | {s:.1%} | {r:.1%} |"
            for n, s, r in zip(bins, drift.served, reference, strict=True)
        ]
    return lines


def charts(monitor: Monitor) -> list[str]:
    """One chart per drifting feature (and the score or predicted class when they drift)."""
    drifting = monitor.drifting
    if not drifting:
        return []
    lines = ["#### Drifting distributions (orange bars: served, grey line: reference)"]
    for drift in drifting[:MAX_CHARTS]:
        lines += ["", *chart(drift)]
    if len(drifting) > MAX_CHARTS:
        lines += ["", f"… and {len(drifting) - MAX_CHARTS} more (`reports/monitor.json`)."]
    return lines


def render(monitor: Monitor, reference: Path) -> str:
    """The markdown report: verdict first, then the evidence."""
    files = monitor.files
    where = cell(files[0], 200) if len(files) == 1 else f"{len(files)} files"
    scored = f"; {monitor.scored:,} scored here with the current model" if monitor.scored else ""
    breach = outcomes.breach_line(monitor.fairness)
    sections = [
        [verdict_line(monitor), *(["", breach] if breach else [])],
        [f"{monitor.rows:,} served rows from {where}{scored}; reference: `{cell(reference)}`."],
        drift_table(monitor),
        quality_section(monitor),
        outcomes.value_section(monitor.value),
        outcomes.fairness_section(monitor.fairness),
        charts(monitor),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def render_error(reason: str) -> str:
    """The report when the rows could not be compared."""
    return f"⚠️ **Could not compare**: {cell(reason, 4000)}\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return round(float(value), 8) if math.isfinite(value) else None
    return value


def _drift_document(drift: Drift) -> dict[str, Any]:
    return {
        "kind": drift.kind,
        "rows": drift.rows,
        "reference_rows": drift.distribution.rows,
        "psi": _finite(drift.psi),
        "threshold": _finite(drift.threshold),
        "ks": _finite(drift.ks),
        "ks_threshold": _finite(drift.ks_threshold),
        "drift": drift.drift,
        "bins": drift.distribution.binning.labels,
        "fractions": [_finite(v) for v in drift.served],
        "reference": [_finite(v) for v in drift.distribution.fractions],
    }


def document(monitor: Monitor) -> dict[str, Any]:
    """The machine-readable report."""
    code = monitor.exit_code
    realised = monitor.realised
    return {
        "task": monitor.task,
        "verdict": {0: "no drift", 1: "drift", 2: "no verdict"}[code],
        "exit_code": code,
        "reason": (
            f"{monitor.rows} served rows, fewer than monitor.min_rows ({monitor.params.min_rows})"
            if code == 2
            else None
        ),
        "rows": monitor.rows,
        "scored": monitor.scored,
        "files": [str(f) for f in monitor.files],
        "settings": {
            "false_alarm_rate": monitor.params.false_alarm_rate,
            "psi_floor": monitor.params.psi_floor,
            "min_rows": monitor.params.min_rows,
        },
        "drifting": [d.name for d in monitor.drifting if not _is_output(monitor, d)],
        "score_drift": monitor.score.drift,
        **(
            {"predicted_class_drift": monitor.predicted.drift}
            if monitor.predicted is not None
            else {}
        ),
        "features": {d.name: _drift_document(d) for d in monitor.features},
        "score": _drift_document(monitor.score),
        **(
            {"predicted_class": _drift_document(monitor.predicted)}
            if monitor.predicted is not None
            else {}
        ),
        "quality": {
            "threshold": monitor.threshold if monitor.task == "binary" else None,
            "estimated": (
                {k: _finite(v) for k, v in monitor.estimated.items()}
                if monitor.estimated is not None
                else None
            ),
            "test_estimated": (
                {k: _finite(v) for k, v in monitor.test_estimated.items()}
                if monitor.test_estimated is not None
                else None
            ),
            "test": {k: _finite(v) for k, v in monitor.test_metrics.items()},
            "realised": None
            if realised is None
            else {
                "matched": realised.matched,
                "unmatched": realised.unmatched,
                "unused_labels": realised.unused,
                "metrics": {k: _finite(v) for k, v in realised.metrics.items()},
                "bounds": {
                    name: {k: _finite(v) for k, v in bound.items()}
                    for name, bound in realised.bounds.items()
                },
                **(
                    {"filled_intervals": realised.filled, "half_width": realised.half_width}
                    if monitor.task == "regression"
                    else {}
                ),
            },
        },
        "value": None if monitor.value is None else monitor.value.document(),
        "fairness": None if monitor.fairness is None else monitor.fairness.document(),
    }


def main(argv: list[str] | None = None) -> int:
    """Compare, write both reports, and exit 0 (no drift), 1 (drift) or 2 (could not compare)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="served rows: .csv, .parquet, .jsonl or a folder")
    parser.add_argument("--labels", type=Path, help="late labels: CSV with the columns id,label")
    parser.add_argument("--markdown", type=Path, default=Path("reports/monitor.md"))
    parser.add_argument("--json", type=Path, default=Path("reports/monitor.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    for name in NAMED:
        parser.add_argument(f"--{name}", type=Path, help=f"default: paths.{name} of params.yaml")
    args = parser.parse_args(argv)

    try:
        paths = load_paths(args.params)
        overrides = {
            ("schema_" if name == "schema" else name): getattr(args, name)
            for name in NAMED
            if getattr(args, name) is not None
        }
        paths = paths.model_copy(update=overrides)
        monitor = build(args.rows, args.labels, paths, args.params)
    except (PipelineError, OSError) as error:
        reason = " ".join(str(error).split()) if "\n" not in str(error) else str(error)
        write_atomically(args.markdown, lambda p: p.write_text(render_error(reason)))
        write_json(args.json, {"verdict": "error", "exit_code": 2, "reason": reason})
        print(f"error: could not compare: {reason}", file=sys.stderr)
        return 2
    text = render(monitor, paths.reference)
    write_atomically(args.markdown, lambda p: p.write_text(text))
    write_json(args.json, document(monitor))
    print(verdict_line(monitor).replace("**", ""))
    for breach in monitor.fairness.breaches if monitor.fairness is not None else []:
        print(f"fairness: {breach} (not drift: the exit code is unchanged)")
    if monitor.task == "regression" and monitor.realised is None:
        print(NEEDS_LABELS.replace("`", ""))
    print(f"wrote {args.markdown} and {args.json}")
    return monitor.exit_code


if __name__ == "__main__":
    sys.exit(main())
