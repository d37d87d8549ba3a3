"""What changed in the model card between BASE and a pull request: a section of the PR comment.

It reads the evaluation outputs both sides have (``eval/metrics.json``, ``eval/segments.json``),
so BASE needs no card of its own; :mod:`pipelines.review.report` adds the section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.core.formatting import number
from pipelines.core.metrics import BETTER, label_of


def summary(
    metrics: dict[str, Any], segments: dict[str, Any], names: Sequence[str]
) -> dict[str, float]:
    """What the card's headline says of one model: test metrics and segment gaps.

    Reads the evaluation outputs both sides of a pull request have (``eval/metrics.json`` and
    ``eval/segments.json``), so BASE needs no card of its own. The test metrics are those of the
    file, whatever the model's task; the gaps are those of the metrics ``names`` (of its task).
    """
    result = {
        label_of(n): float(metrics[n]) for n in BETTER if isinstance(metrics.get(n), int | float)
    }
    for column, groups in segments.items():
        for name in names:
            values = [
                float(g[name]) for g in groups.values() if isinstance(g.get(name), int | float)
            ]
            if len(values) >= 2:
                result[f"{label_of(name)} gap across {column}"] = max(values) - min(values)
    return result


def changes_section(
    base: tuple[dict[str, Any], dict[str, Any]] | None,
    pr: tuple[dict[str, Any], dict[str, Any]],
    names: Sequence[str],
    tolerance: float = 5e-4,
) -> list[str]:
    """Markdown lines for the PR comment: what changed in the model card, base vs PR.

    Args:
        base: BASE's metrics and segments (None: BASE has no model).
        pr: The PR's metrics and segments.
        names: The metrics whose gaps between segment groups are shown (of the model's task).
        tolerance: Changes smaller than this are not shown.
    """
    lines = ["#### Model card", ""]
    after = summary(*pr, names)
    if base is None:
        return [*lines, "New card: BASE has no model."]
    before = summary(*base, names)
    rows = []
    for key in [*after, *(k for k in before if k not in after)]:
        old, new = before.get(key), after.get(key)
        if old is None or new is None or abs(new - old) > tolerance:
            delta = "" if old is None or new is None else f"{new - old:+.4f}"
            rows.append(f"| {key} | {number(old, 4)} | {number(new, 4)} | {delta} |")
    if not rows:
        return [*lines, "Unchanged: the card's metrics and segment gaps are the same as BASE's."]
    return [*lines, "| | base | PR | Δ |", "|---|---|---|---|", *rows]
