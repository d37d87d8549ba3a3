"""What a search reports: ``reports/tune.json`` (the contract) and ``reports/tune.md`` (for people).

The Markdown is a pull request's body: the best trial against the current params with the spread
of their scores across the folds, the search's history as a Mermaid chart that GitHub draws
inline, and each parameter's importance.
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.core import xychart
from pipelines.core.formatting import cell, number
from pipelines.core.metrics import VALUE, label_of
from pipelines.tuning.search import Result, Trial

DIGITS = 4


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def document(
    result: Result, *, rows: int, folds: int, seed: int, written: bool, engine: str = "local"
) -> dict[str, Any]:
    """``reports/tune.json``: the contract keys first, then the search's detail.

    ``metric`` (the gate's primary metric), ``baseline`` (trial 0's cross-validated score),
    ``best`` (the best trial's), ``params`` (the best trial's params by their path in train:,
    what params.yaml's train: holds after the search) and ``trials`` (how many ran).
    """
    best, baseline = result.best, result.baseline
    return {
        "metric": result.metric,
        "baseline": _finite(baseline.score),
        "best": _finite(best.score),
        "params": best.params,
        "trials": len(result.trials),
        "better": result.better,
        "best_trial": best.number,
        "improved": result.improved,
        "written": written,
        "stopped_by": result.stopped_by,
        "folds": folds,
        "rows": rows,
        "seed": seed,
        "engine": engine,
        "complete": sum(t.state == "complete" for t in result.trials),
        "pruned": sum(t.state == "pruned" for t in result.trials),
        "importance": result.importance,
        "history": [
            {
                "number": t.number,
                "state": t.state,
                "score": _finite(t.score),
                "folds": [_finite(s) for s in t.folds],
                "params": t.params,
                "seconds": round(t.seconds, 3),
                "worker": t.worker,
                "threshold": t.threshold,
            }
            for t in result.trials
        ],
    }


def markdown(result: Result, *, rows: int, folds: int, written: bool) -> str:
    """``reports/tune.md``: the verdict, the comparison table, the chart, the importances."""
    best, baseline = result.best, result.baseline
    label = label_of(result.metric)
    lines = [
        f"## Tuning: {label}, {folds}-fold cross-validation on {rows:,} training rows",
        "",
        f"{len(result.trials)} trials ({_states(result)}; stopped by {result.stopped_by}), "
        f"{result.better} is better. The test rows took no part: the pull request's gate "
        "judges the tuned params on them.",
        "",
    ]
    if result.improved:
        change = (best.score or 0.0) - (baseline.score or 0.0)
        lines.append(
            f"**Trial {best.number} beats the current params** by "
            f"{_score(result.metric, change, signed=True)} {label}"
            + (": written into params.yaml's `train:`." if written else " (params.yaml unchanged).")
        )
    else:
        lines.append(
            "**No trial beats the current params** (trial 0): params.yaml is left as it is."
        )
    lines += ["", *_table(result, label), "", *_chart(result, label), ""]
    if result.importance:
        lines += ["### Importance of each parameter (fANOVA)", ""]
        lines += ["| parameter | share of the score's variance |", "|---|---:|"]
        lines += [f"| `{cell(k)}` | {v:.1%} |" for k, v in result.importance.items()]
    else:
        lines.append("_Too few completed trials to tell the parameters' importance._")
    return "\n".join(lines) + "\n"


def _score(metric: str, value: float | None, signed: bool = False) -> str:
    """A score as the report prints it: value in whole units with thousands separators."""
    if metric != VALUE or value is None or not math.isfinite(value):
        return number(value, DIGITS, signed=signed)
    return f"{value:+,.0f}" if signed else f"{value:,.0f}"


def _states(result: Result) -> str:
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def _folds(trial: Trial, metric: str) -> str:
    return ", ".join(_score(metric, s) for s in trial.folds)


def _table(result: Result, label: str) -> list[str]:
    best, baseline = result.best, result.baseline
    lines = [
        f"| | current params (trial 0) | best (trial {best.number}) |",
        "|---|---:|---:|",
        f"| **{label}**, mean over the folds | {_score(result.metric, baseline.score)} "
        f"| {_score(result.metric, best.score)} |",
        f"| spread across the folds (std) | {_score(result.metric, baseline.spread)} "
        f"| {_score(result.metric, best.spread)} |",
        f"| per fold | {_folds(baseline, result.metric)} | {_folds(best, result.metric)} |",
    ]
    if baseline.threshold is not None:  # scored by value: a binary model's decisions
        lines.append(
            f"| threshold the decisions were made at | {number(baseline.threshold, DIGITS)} "
            f"| {number(best.threshold, DIGITS)} |"
        )
    for name, value in best.params.items():
        was = baseline.params.get(name)
        shown = f"**{cell(value)}**" if value != was else cell(value)
        lines.append(f"| `{cell(name)}` | {cell(was)} | {shown} |")
    return lines


def _chart(result: Result, label: str) -> list[str]:
    """The completed trials' scores (bars) and the best so far (line), by trial number."""
    sign = 1 if result.better == "higher" else -1
    scored = [t for t in result.trials if _finite(t.score) is not None]
    scores = [float(t.score or 0.0) for t in scored]
    running: list[float] = []
    for score in scores:
        running.append(score if not running else sign * max(sign * running[-1], sign * score))
    low, high = min(scores), max(scores)
    pad = (high - low) * 0.1 or abs(high) * 0.01 or 0.01
    values = ", ".join
    numbers = [str(t.number) for t in scored]
    # Trial numbers that would crowd the axis give way to a numeric axis of the completed trials
    # in order, whose ticks Mermaid spaces itself; there each score is a line's vertex, as
    # Mermaid draws bars on a numeric axis as wide as on a short one, over each other.
    few = xychart.fits(numbers)
    axis = (
        f'"trial" [{values(numbers)}]'
        if few
        else f'"completed trial (1 to {len(scored)}, in order)" 1 --> {len(scored)}'
    )
    title = f"{xychart.shorten(label, 20)} per completed trial (grey), best so far (orange)"
    return [
        "### The search",
        "",
        "```mermaid",
        xychart.init(f"{xychart.GREY}, {xychart.ORANGE}"),
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis {axis}",
        f'    y-axis "{label}" {low - pad:.4f} --> {high + pad:.4f}',
        f"    {'bar' if few else 'line'} [{values(f'{s:.4f}' for s in scores)}]",
        f"    line [{values(f'{s:.4f}' for s in running)}]",
        "```",
    ]
