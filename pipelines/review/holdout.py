"""Champion and challenger on the same holdout when a pull request changes the data.

A data change gives the PR other test rows than BASE's, so their predictions cannot be paired.
Instead BASE's model scores the PR's test rows (their raw records, through the batch scorer and
:class:`pipelines.serving.scoring.Scorer`, the code path that serves BASE's model), and both
models are compared on the same rows: a paired bootstrap on the new holdout. It works alike for
every task: BASE's output becomes predictions of its task (a binary model's labelled at BASE's
threshold, a regression's with BASE's interval).

Rows that BASE's model was trained on are left out of that holdout, or BASE would be judged on
rows it has seen. The split goes by a hash of the id, so rows added or changed keep every row on
its side and none is left out; after another ``featurize.seed`` or ``test_size`` some are. Both
sides' metrics are then computed on the rows that remain.

BASE's model cannot score the new rows after a schema change (a new or removed column, a new
category, another type) or when the rows break BASE's schema: the gate then falls back to an
unpaired bootstrap of each side's own test rows, and says why. A changed target (its task or
classes) is such a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.metrics import Predictions, evaluation_metrics
from pipelines.core.model import load_model
from pipelines.schema import Schema
from pipelines.serving import batch as score

MAX_NAMED = 5


@dataclass(frozen=True)
class Holdout:
    """Both models' predictions and metrics on the PR's test rows that BASE did not train on.

    Attributes:
        base: BASE's predictions on those rows.
        pr: The PR's predictions on the same rows, in the same order.
        base_metrics: BASE's metrics on those rows (a binary model's at BASE's threshold).
        pr_metrics: The PR's metrics on those rows (a binary model's at the PR's threshold).
        excluded: PR test rows left out because BASE trained on them.
    """

    base: Predictions
    pr: Predictions
    base_metrics: dict[str, Any]
    pr_metrics: dict[str, Any]
    excluded: int

    def note(self) -> str:
        """What the comment says about this comparison."""
        rows = len(self.pr)
        left_out = (
            f", leaving out {self.excluded:,} that BASE's model was trained on"
            if self.excluded
            else ""
        )
        return (
            f"The data changed, so BASE's model was scored on the PR's test rows (their raw "
            f"records, with the serving scorer): the bootstrap is paired on the new holdout of "
            f"{rows:,} rows{left_out}. Base and PR values are both measured on those rows."
        )


def _named(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def schema_change(base: Schema, pr: Schema) -> str | None:
    """Why BASE's model cannot score rows of the PR's schema, or None when it can.

    A new or removed feature, a changed type or a new category is a change BASE's model never
    saw. Wider or narrower ranges are not: rows outside BASE's range are found when checking.
    """
    reasons = []
    added = [n for n in pr.features if n not in base.features]
    removed = [n for n in base.features if n not in pr.features]
    if added:
        reasons.append(f"new column {_named(added)}")
    if removed:
        reasons.append(f"removed column {_named(removed)}")
    for name, feature in pr.features.items():
        before = base.features.get(name)
        if before is None:
            continue
        if before.type != feature.type:
            reasons.append(f"'{name}' changed type from {before.type} to {feature.type}")
        elif feature.type == "category":
            new = [c for c in feature.categories or () if c not in (before.categories or ())]
            if new:
                reasons.append(f"new category {_named(new)} of '{name}'")
    if pr.target != base.target:
        reasons.append("the target changed")
    if pr.id != base.id:
        reasons.append("the id column changed")
    return "; ".join(reasons) or None


def rescore(
    raw: pd.DataFrame,
    pr_predictions: Predictions,
    *,
    base_schema: Schema,
    pr_schema: Schema,
    base_train_ids: np.ndarray,
    base_model: Path,
    thresholds: tuple[float, float],
) -> tuple[Holdout | None, str]:
    """Score BASE's model on the PR's test rows that it did not train on.

    Args:
        raw: The PR's raw table.
        pr_predictions: The PR's ``eval/predictions.csv``, read as its task's predictions.
        base_schema: BASE's ``schema.yaml``.
        pr_schema: The PR's ``schema.yaml``.
        base_train_ids: The ids of BASE's training rows.
        base_model: BASE's model directory.
        thresholds: BASE's and the PR's decision thresholds (a binary model's; others ignore
            them).

    Returns:
        The holdout, or None and why BASE's model cannot score the PR's test rows.
    """
    change = schema_change(base_schema, pr_schema)
    if change is not None:
        return None, f"a schema change ({change})"
    key = raw[pr_schema.id].astype("string")
    if key.duplicated().any():
        return None, "an id appears twice in the PR's raw table"
    ids = pd.Series(pr_predictions.ids).astype("string")
    seen = ids.isin(pd.Series(base_train_ids).astype("string")).to_numpy()
    kept = pr_predictions.take(np.flatnonzero(~seen))
    if len(kept) == 0:
        return None, "BASE's model was trained on every one of the PR's test rows"
    position = pd.Index(key).get_indexer(pd.Index(pd.Series(kept.ids).astype("string")))
    if (position < 0).any():
        return None, f"{int((position < 0).sum())} of the PR's test ids are not in its raw table"
    columns = [base_schema.id, *base_schema.features, base_schema.target.column]
    rows = raw.iloc[position][columns].reset_index(drop=True)
    problems = score.check_table(rows, base_schema)
    if problems:
        broken = "; ".join(f"{p.column}: {p.rule}" for p in problems[:MAX_NAMED])
        return None, f"the PR's test rows break BASE's schema ({broken})"
    model = load_model(base_model)
    output = score.outputs(rows, base_schema, model)
    base = model.predictions(kept.ids, kept.label, output, thresholds[0])
    return (
        Holdout(
            base=base,
            pr=kept,
            base_metrics=evaluation_metrics(base, thresholds[0]),
            pr_metrics=evaluation_metrics(kept, thresholds[1]),
            excluded=int(seen.sum()),
        ),
        "",
    )
