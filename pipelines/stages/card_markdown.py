"""The model card's Markdown: front matter, the human text, then the generated sections.

:mod:`pipelines.stages.card` gathers the facts (:func:`pipelines.stages.card.card_facts`); this
renders them, each section as the model's task has it.
"""

from __future__ import annotations

from typing import Any

import yaml

from pipelines.core.formatting import number
from pipelines.core.metrics import label_of

Interval = dict[str, float | None]  # {"value", "low", "high"}


def _with_interval(entry: Interval) -> str:
    text = number(entry["value"], 4)
    if entry["low"] is None or entry["high"] is None:
        return text
    return f"{text} ({number(entry['low'], 4)} to {number(entry['high'], 4)})"


def target_line(data: dict[str, Any]) -> str:
    """The training data's target: class balance (classification) or distribution (regression)."""
    if "quantiles" in data:
        shown = ", ".join(f"{k} {v:,.4g}" for k, v in data["quantiles"].items())
        return f"- Target distribution: {shown}"
    if "classes" in data:
        total = sum(data["classes"].values()) or 1
        return "- Class balance: " + ", ".join(
            f"`{k}` {v:,} ({v / total:.1%})" for k, v in data["classes"].items()
        )
    balance = data["balance"]
    return (
        "- Class balance: "
        + ", ".join(f"`{k}` {v:,}" for k, v in balance["classes"].items())
        + f" (positive `{balance['positive']}`: {balance['positive_share']:.1%})"
    )


def calibration_lines(calibration: dict[str, Any]) -> list[str]:
    """The calibration section, as the task has it (the points: ``eval/plots/calibration.json``).

    Binary: the reliability diagram and its expected calibration error. Multiclass: accuracy
    against the top probability. Regression: the prediction interval's coverage on the test
    rows, and mean actual against mean prediction per prediction decile.
    """
    task, points = calibration["task"], calibration["points"]
    if task == "binary":
        lines = [
            "",
            "## Calibration",
            "",
            f"Expected calibration error: {number(calibration['ece'], 4)} "
            "(row-weighted mean |predicted - observed| over the probability bins).",
            "",
            "| mean predicted | observed rate | rows |",
        ]
    elif task == "multiclass":
        lines = [
            "",
            "## Calibration",
            "",
            "Accuracy against the model's top probability, per bin of that probability: where "
            "the model is calibrated, the two are equal.",
            "",
            "| mean top probability | accuracy | rows |",
        ]
    else:
        interval = calibration.get("interval") or {}
        promised = interval.get("coverage")
        width = interval.get("half_width")
        built = (
            f" (prediction ± {number(width, 4)}, built to cover {promised:.0%}: `serve.coverage`)"
            if promised is not None and width is not None
            else ""
        )
        lines = [
            "",
            "## Prediction interval and calibration",
            "",
            f"Interval coverage on the test rows: {number(calibration.get('coverage'), 4)}{built}.",
            "",
            "Mean actual value against mean prediction, per decile of the prediction:",
            "",
            "| mean prediction | mean actual | rows |",
        ]
    lines.append("|---|---|---|")
    return lines + [
        f"| {number(p['predicted'], 4)} | {number(p['observed'], 4)} | {p['rows']:,} |"
        for p in points
    ]


def decisions_lines(decisions: dict[str, Any]) -> list[str]:
    """What the model's decisions are worth on the test rows, and its rates by group."""
    metrics, audit = decisions.get("metrics") or {}, decisions.get("fairness") or {}
    if "value_per_1000" not in metrics and not audit:
        return []
    lines = ["## Decisions", ""]
    if decisions.get("threshold") is not None:
        lines.append(f"- Decision threshold: {decisions['threshold']:.4g} (`train.threshold`)")
    if "value_per_1000" in metrics:
        money = decisions.get("currency") or ""
        low, high = metrics.get("value_lift_low"), metrics.get("value_lift_high")
        lift = "" if low is None or high is None else f" (lift interval {low:,.0f} to {high:,.0f})"
        lines.append(
            f"- Value per 1,000 {decisions.get('unit') or 'rows'}: "
            f"{metrics['value_per_1000']:,.0f} {money}; the best policy without a model "
            f"{metrics.get('value_trivial_per_1000', float('nan')):,.0f}{lift} (`value:`)"
        )
    for column, found in audit.items():
        groups = found["groups"]
        rates = [k for k in next(iter(groups.values()), {}) if k not in ("rows", "judged")]
        lines += [
            "",
            f"### Fairness: `{column}`",
            "",
            "| group | rows | " + " | ".join(rates) + " |",
            "|---|---|" + "---|" * len(rates),
        ]
        for name, group in groups.items():
            cells = ["n/a" if group.get(r) is None else f"{group[r]:.3f}" for r in rates]
            judged = "" if group["judged"] else " (too few rows to judge)"
            lines.append(f"| {name}{judged} | {group['rows']:,} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [
            f"- {gap.replace('_', ' ')}: {v['value']:.3f} (interval {v['low']:.3f} to "
            f"{v['high']:.3f})"
            for gap, v in found.items()
            if gap != "groups" and v and v.get("low") is not None
        ]
    return [*lines, ""]


def render_card(facts: dict[str, Any], text: str) -> str:
    """The card: front matter, then the human text, then the generated sections.

    Args:
        facts: What :func:`card_facts` gathers.
        text: The human-owned text (intended and out-of-scope use, known limitations).
    """
    front = yaml.safe_dump(facts["metadata"], sort_keys=False, allow_unicode=True)
    confidence = facts["confidence"]
    data = facts["data"]
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# Model card: {facts['name']}",
        "",
        "<!-- Generated by the card stage (`make card`); edit the human text in "
        f"{facts['text_path']}, not this file. -->",
        "",
        text.strip(),
        "",
        "## Training data",
        "",
        f"- Data hash (DVC md5): `{data['md5']}`",
        f"- Snapshot: {data['snapshot']}",
        f"- Rows: {data['rows']:,} ({data['train_rows']:,} train, {data['test_rows']:,} test)",
        target_line(data),
        "",
        f"## Test metrics ({confidence:.0%} bootstrap intervals, "
        f"{facts['resamples']:,} resamples of the {data['test_rows']:,} test rows)",
        "",
        "| metric | value (interval) |",
        "|---|---|",
    ]
    lines += [f"| {label_of(n)} | {_with_interval(e)} |" for n, e in facts["metrics"].items()]
    lines += calibration_lines(facts["calibration"])
    lines += ["", "## Metrics per segment", ""]
    if facts.get("segment_note"):
        lines += [facts["segment_note"], ""]
    names = facts["segment_metrics"]
    positives = facts["task"] == "binary"  # a count only a binary target has
    for column, groups in facts["segments"].items():
        lines += [
            f"### `{column}`",
            "",
            "| group | rows | "
            + ("positives | " if positives else "")
            + " | ".join(label_of(n) for n in names)
            + " |",
            "|---|---|" + "---|" * (len(names) + positives),
        ]
        for group, entry in groups.items():
            cells = (
                ["suppressed"] * len(names)
                if entry["suppressed"]
                else [_with_interval(entry["metrics"][n]) for n in names]
            )
            counts = [f"{entry['rows']:,}"] + ([f"{entry['positives']:,}"] if positives else [])
            lines.append(f"| {group} | " + " | ".join([*counts, *cells]) + " |")
        lines.append("")
    gaps = facts["gaps"]
    if gaps:
        top = gaps[0]
        lines.append(
            f"**Largest gap:** {label_of(top['metric'])} {top['gap']:.4f} across "
            f"`{top['column']}` ({top['best']} best, {top['worst']} worst)."
        )
    else:
        lines.append("No segment has two groups large enough to compare.")
    lines += [
        f"Groups under {facts['min_segment_rows']} test rows are suppressed.",
        "",
        *decisions_lines(facts.get("decisions") or {}),
        "## Limitations (generated)",
        "",
    ]
    lines += [f"- {fact}" for fact in facts["limitations"]] or ["- None found in the numbers."]
    lineage = facts["lineage"]
    lines += [
        "",
        "## Lineage",
        "",
        f"- Git commit: `{lineage['git_commit']}`",
        f"- MLflow run: `{lineage['mlflow_run_id']}`",
        f"- MLflow model: `{lineage['mlflow_model_uri']}`",
        "",
        "| stage | output | md5 (dvc.lock) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {stage} | `{path}` | `{md5}` |"
        for stage, outs in lineage["stages"].items()
        for path, md5 in outs.items()
    ]
    lines += [
        "",
        "Params:",
        "",
        "```yaml",
        yaml.safe_dump(lineage["params"], sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
