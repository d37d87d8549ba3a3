"""Fairness for the groups a team names: rates per group, the largest gaps, bootstrap intervals.

For each sensitive column (``fairness.sensitive`` in params), the rows of each group (a value of
the column; missing is a group of its own) get the task's rates at the model's decisions:

- binary: ``selection_rate`` (share of rows acted on), ``tpr`` (share of the positives acted on)
  and ``fpr`` (share of the negatives acted on);
- multiclass: ``accuracy``; regression: ``mae``.

A group with fewer than ``min_group_rows`` rows is reported but not judged. Between the judged
groups the gaps are the largest difference of a rate: ``demographic_parity_difference``
(selection rate) and ``equalized_odds_difference`` (the larger of the TPR and FPR gaps), as
Fairlearn defines them; ``accuracy_difference`` and ``mae_difference`` for the other tasks. Each
gap has a percentile bootstrap interval: rows resampled with replacement, all groups at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipelines.core.metrics import Task, interval
from pipelines.core.weighted import resample_blocks

RATES: dict[Task, tuple[str, ...]] = {
    "binary": ("selection_rate", "tpr", "fpr"),
    "multiclass": ("accuracy",),
    "regression": ("mae",),
}
# Each gap: the rates whose largest between-group difference it is (the larger one of them)
GAPS: dict[Task, dict[str, tuple[str, ...]]] = {
    "binary": {
        "demographic_parity_difference": ("selection_rate",),
        "equalized_odds_difference": ("tpr", "fpr"),
    },
    "multiclass": {"accuracy_difference": ("accuracy",)},
    "regression": {"mae_difference": ("mae",)},
}
MISSING = "<missing>"


def _parts(
    task: Task, label: np.ndarray, decided: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each rate as (numerator per row, denominator per row): a weighted mean over rows."""
    ones = np.ones(len(label))
    if task == "binary":
        acted = (np.asarray(decided) == 1).astype(np.float64)
        positive = (np.asarray(label) == 1).astype(np.float64)
        return {
            "selection_rate": (acted, ones),
            "tpr": (acted * positive, positive),
            "fpr": (acted * (1 - positive), 1 - positive),
        }
    if task == "multiclass":
        right = (np.asarray(label) == np.asarray(decided)).astype(np.float64)
        return {"accuracy": (right, ones)}
    error = np.abs(np.asarray(decided, np.float64) - np.asarray(label, np.float64))
    return {"mae": (error, ones)}


def _rates(
    parts: dict[str, tuple[np.ndarray, np.ndarray]], member: np.ndarray, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Each rate of one group for each resample (rows of ``counts``); NaN where undefined."""
    weights = counts * member
    out = {}
    for name, (top, bottom) in parts.items():
        below = weights.dot(bottom)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(
                below > 0, weights.dot(top) / np.where(below > 0, below, 1), np.nan
            )
    return out


def _gap(per_group: list[dict[str, np.ndarray]], rates: tuple[str, ...]) -> np.ndarray:
    """The largest between-group difference of any of ``rates`` (NaN-free groups only)."""
    gaps = []
    for rate in rates:
        values = np.vstack([g[rate] for g in per_group])
        with np.errstate(invalid="ignore"):
            gaps.append(np.nanmax(values, axis=0) - np.nanmin(values, axis=0))
    return np.max(np.vstack(gaps), axis=0)


def groups_of(values: Any) -> np.ndarray:
    """Each row's group: its value as text, missing as :data:`MISSING`."""
    import pandas as pd

    return pd.Series(values).astype("string").fillna(MISSING).to_numpy(dtype=object)


def audit(
    task: Task,
    label: np.ndarray,
    decided: np.ndarray,
    columns: dict[str, Any],
    *,
    min_group_rows: int,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """Rates per group and the gaps between judged groups, per sensitive column.

    Args:
        task: The model's task.
        label: Each row's label (class positions for a classifier).
        decided: Each row's decision (binary 1 = acted on; a class position; a prediction).
        columns: Each sensitive column's values, aligned with the rows.
        min_group_rows: Groups with fewer rows are reported, not judged.
        resamples: Bootstrap resamples of the gaps' intervals.
        seed: Of the bootstrap.
        confidence: Of the intervals.

    Returns:
        Per column: ``groups`` (each group's ``rows``, ``judged`` and rates) and each gap as
        ``{"value", "low", "high"}`` (None when fewer than two groups are judged).
    """
    parts = _parts(task, label, decided)
    ones = np.ones((1, len(label)))
    members: dict[str, list[tuple[str, np.ndarray]]] = {}
    result: dict[str, Any] = {}
    for column, values in columns.items():
        group = groups_of(values)
        result[column] = {"groups": {}}
        members[column] = []
        for name in sorted(set(group)):
            member = (group == name).astype(np.float64)
            point = {k: float(v[0]) for k, v in _rates(parts, member, ones).items()}
            enough = int(member.sum()) >= min_group_rows
            result[column]["groups"][name] = {"rows": int(member.sum()), "judged": enough} | {
                k: None if math.isnan(v) else round(v, 6) for k, v in point.items()
            }
            if enough:
                members[column].append((name, member))
    samples: dict[tuple[str, str], list[np.ndarray]] = {}
    for counts in resample_blocks(len(label), resamples, seed):
        for column, judged in members.items():
            per_group = [_rates(parts, member, counts) for _, member in judged]
            for gap, rates in GAPS[task].items():
                if len(judged) >= 2:
                    samples.setdefault((column, gap), []).append(_gap(per_group, rates))
    for column, judged in members.items():
        observed = [_rates(parts, member, ones) for _, member in judged]
        for gap, rates in GAPS[task].items():
            if len(judged) < 2:
                result[column][gap] = None
                continue
            low, high = interval(np.concatenate(samples[(column, gap)]), confidence)
            value = float(_gap(observed, rates)[0])
            result[column][gap] = {
                "value": round(value, 6),
                "low": _round(low),
                "high": _round(high),
            }
    return result


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
