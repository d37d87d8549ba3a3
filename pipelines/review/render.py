"""The pull-request comment in markdown: verdict, metrics, curves, params, data, segments.

Everything from the pull request is untrusted text: it reaches the comment only through
:func:`pipelines.core.formatting.cell`. What shows the model's errors depends on its task
(:mod:`pipelines.review.sections`); charts are Mermaid charts, which GitHub draws inline.
"""

from __future__ import annotations

import math
import re

from pipelines.core.formatting import cell, number
from pipelines.core.metrics import VALUE, Task, label_of
from pipelines.review.card_changes import changes_section as card_changes
from pipelines.review.charts import category_chart
from pipelines.review.gate import MetricResult
from pipelines.review.outputs import BATCH_REPEATS, SINGLE_REPEATS, Report
from pipelines.review.sections import errors_section
from pipelines.stages.card import segment_metric_names

MARKER = "<!-- model-report -->"  # the posting client finds (and updates) the comment by it


MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters


MAX_TABLE_ROWS = 25


# The metrics of the segment table, per task: how well each group is ranked and decided
# (binary), classified (multiclass), or how large its errors are (regression).
SEGMENT_METRICS: dict[Task, tuple[str, str]] = {
    "binary": ("roc_auc", "f1"),
    "multiclass": ("macro_f1", "accuracy"),
    "regression": ("rmse", "mae"),
}
SEGMENT_TITLES: dict[Task, str] = {
    "binary": "Segments",
    "multiclass": "Segments",
    "regression": "Error by segment",
}


ICONS = {
    "improved": "🟢 improved",
    "unchanged": "⚪ unchanged",
    "regressed": "🔴 regressed",
    "inconclusive": "🟡 inconclusive",
    "new": "🆕 new",
    "invalid": "⛔ invalid",
}


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


def _amount(value: float | None, signed: bool = False) -> str:
    """A sum of money: whole units with thousands separators (or n/a)."""
    if value is None or not math.isfinite(value):
        return number(value)
    return f"{value:+,.0f}" if signed else f"{value:,.0f}"


def value_section(report: Report) -> list[str]:
    """Value first: per 1,000 rows, base and PR, the change with its interval, and the curve."""
    view = report.value
    if view is None:
        return []
    found = [m for m in report.gate.metrics if m.name == VALUE]
    per = f"per 1,000 {cell(view.unit)}"
    money = f"{cell(view.currency)}"
    lines = [f"#### Value {per} ({money})", ""]
    if found and found[0].pr is not None:
        m = found[0]
        said = f"PR **{_amount(m.pr)}**"
        if m.base is not None:
            said = f"base **{_amount(m.base)}**, {said}, Δ **{_amount(m.delta, True)}**"
            if m.low is not None and m.high is not None:
                interval = f"{_amount(m.low, True)} to {_amount(m.high, True)}"
                said += f" ({report.gate.confidence:.0%} interval {interval}; {ICONS[m.verdict]})"
        lines.append(f"{said}.")
    else:
        lines.append(
            "Not gated: add `value_per_1000` to `gate.metrics` in params.yaml to guard it."
        )
    name, worth = view.trivial
    lines += [
        "",
        f"Both models valued by the PR's value model (`value:` in params.yaml), each at its own "
        f"decisions; the best policy without a model ({cell(name)}) earns {_amount(worth)}.",
    ]
    if view.curves:
        sides = [s for s in ("base", "pr") if s in view.curves]
        marks = ", ".join(
            f"{'base' if s == 'base' else 'PR'} at {view.thresholds[s]:.3g}" for s in sides
        )
        grid = [point["threshold"] for point in view.curves[sides[-1]]]
        lines += [
            "",
            *category_chart(
                f"Value {per} by threshold ({marks})",
                "threshold",
                [f"{t:g}" for t in grid],
                money,
                [[point["value"] for point in view.curves[s]] for s in sides],
                span=(grid[0], grid[-1]),  # the value curve's thresholds are evenly spaced
            ),
        ]
    return lines


def fairness_section(report: Report) -> list[str]:
    """Each named group's rates, base → PR, and the gaps with their intervals and bounds."""
    params, audit = report.fairness, report.pr.fairness
    if params is None or not audit:
        return []
    base = report.base.outputs.fairness if report.base.outputs is not None else {}
    lines = [
        "#### Fairness",
        "",
        f"Rates at each model's decisions per group of the test rows; gaps between groups of at "
        f"least {params.min_group_rows} rows, with {params.confidence:.0%} bootstrap intervals. "
        "A gap fails the gate when its whole interval lies above its bound.",
    ]
    for column in params.sensitive:
        found = audit.get(column)
        if not found:
            continue
        before = base.get(column) or {}
        groups = found["groups"]
        rates = [k for k in next(iter(groups.values())) if k not in ("rows", "judged")]
        lines += [
            "",
            f"**{cell(column)}**",
            "",
            "| group | rows | " + " | ".join(f"{r} base → PR" for r in rates) + " |",
            "|---|---|" + "---|" * len(rates),
        ]
        for name, group in list(groups.items())[:MAX_TABLE_ROWS]:
            old = (before.get("groups") or {}).get(name) or {}
            judged = "" if group["judged"] else " (not judged)"
            changes = [f"{number(old.get(r), 3)} → {number(group.get(r), 3)}" for r in rates]
            lines.append(
                f"| {cell(name)}{judged} | {group['rows']:,} | " + " | ".join(changes) + " |"
            )
        lines.append("")
        for gap, value in found.items():
            if gap == "groups" or not value:
                continue
            bound = params.max_gap.get(gap)
            was = (before.get(gap) or {}).get("value")
            verdict = ""
            if bound is not None:
                broken = value["low"] is not None and value["low"] > bound
                verdict = f"; bound {bound}: " + ("❌ above it" if broken else "✅ holds")
            lines.append(
                f"- {gap.replace('_', ' ')}: base {number(was, 3)}, PR "
                f"**{number(value['value'], 3)}** (interval {number(value['low'], 3)} to "
                f"{number(value['high'], 3)}){verdict}"
            )
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
    lines += [
        f"- ⚠️ **Likely leak:** `{cell(leak.get('feature'))}` alone predicts the target with "
        f"{cell(leak.get('metric'))} {number(leak.get('score'), 3)}: if its value is only known "
        "after the outcome, the model's scores here will not hold in production; drop it."
        for leak in (validation.get("leaks") or [])[:MAX_TABLE_ROWS]
    ]
    return lines


def segment_rows(report: Report) -> list[tuple[float, list[str]]]:
    """Rows of the segment table with their largest absolute change, for sorting."""
    base = report.base.outputs.segments if report.base.outputs is not None else {}
    names = SEGMENT_METRICS[report.pr.task]
    rows = []
    for column, values in report.pr.segments.items():
        for value, pr in values.items():
            old = (base.get(column) or {}).get(value) or {}
            changes = [
                pr.get(k) - old.get(k)
                for k in names
                if isinstance(pr.get(k), float) and isinstance(old.get(k), float)
            ]
            largest = max((abs(c) for c in changes), default=0.0)
            cells = [f"{cell(column)} = {cell(value)}", f"{pr.get('rows', 0):,}"]
            for k in names:
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
    """Segment metrics of the task (:data:`SEGMENT_METRICS`), the largest changes first."""
    task = report.pr.task
    rows = segment_rows(report)
    headers = " | ".join(f"{label_of(n)} base | PR | Δ" for n in SEGMENT_METRICS[task])
    lines = [
        f"#### {SEGMENT_TITLES[task]} (largest changes first)",
        "",
        f"| segment | rows | {headers} |",
        "|---|---|" + "---|---|---|" * len(SEGMENT_METRICS[task]),
    ]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows[:MAX_TABLE_ROWS]]
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"\n… and {len(rows) - MAX_TABLE_ROWS} more segments.")
    return lines


def card_segment_metrics(report: Report) -> tuple[str, ...]:
    """The metrics whose gaps between segment groups the model card shows, for the PR's task.

    ``card.segment_metrics`` as the card stage reads it for the task (its headline metrics when
    the configured ones are another task's); without it, the segment table's.
    """
    task = report.pr.task
    if not report.card_metrics:
        return SEGMENT_METRICS[task]
    return tuple(segment_metric_names(task, report.card_metrics)[0])


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
        value_section(report),
        metrics_table(report),
        fairness_section(report),
        [f"> **Note:** {note}" for note in report.gate.notes],
        errors_section(report.base.outputs, report.pr),
        params_section(report),
        data_section(report),
        segments_section(report),
        card_changes(
            None if base.outputs is None else (base.outputs.metrics, base.outputs.segments),
            (report.pr.metrics, report.pr.segments),
            card_segment_metrics(report),
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
