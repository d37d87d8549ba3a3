"""Likely leaks: features that alone predict the target almost perfectly.

A column that holds the answer (a refund amount on a table of cancellations, a diagnosis code beside
the diagnosis) makes a model look excellent in every test and useless in production, where the
column is not known yet. Each feature alone is scored by cross-validated predictions of a shallow
tree on it: binary ROC AUC, multiclass macro one-vs-rest ROC AUC, regression R². A feature at or
above :data:`THRESHOLD` is named; the pipeline goes on (it may be a fine feature), the people
deciding are told.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.core.features import encode, labels
from pipelines.schema import Schema

THRESHOLD = {"binary": 0.98, "multiclass": 0.98, "regression": 0.95}
METRIC = {"binary": "ROC AUC", "multiclass": "macro ROC AUC", "regression": "R²"}
MAX_ROWS = 20_000  # a sample this large gives the score to two decimals, in well under a second


@dataclass(frozen=True)
class Leak:
    """A feature that alone predicts the target almost perfectly."""

    feature: str
    metric: str
    score: float

    def __str__(self) -> str:
        return (
            f"`{self.feature}` alone predicts the target with {self.metric} {self.score:.3f}: "
            "if its value is only known after the outcome, it leaks the answer; drop it"
        )


def single_feature_scores(frame: pd.DataFrame, schema: Schema, seed: int = 0) -> dict[str, float]:
    """Each feature's cross-validated score at predicting the target on its own.

    Args:
        frame: Raw rows with the features and the target (at most :data:`MAX_ROWS` are used).
        schema: The schema (task, features, encoding).
        seed: Seed of the sample and the folds.
    """
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    task = schema.target.task
    if len(frame) > MAX_ROWS:
        frame = frame.sample(MAX_ROWS, random_state=seed)
    y = labels(frame, schema)
    x = encode(frame, schema).fillna(np.float32(-1e30))  # missing is a value of its own
    regression = task == "regression"
    folds = (KFold if regression else StratifiedKFold)(3, shuffle=True, random_state=seed)
    scores = {}
    for name, feature in schema.features.items():
        columns = (
            [f"{name}={c}" for c in feature.categories or ()]
            if feature.type == "category"
            else [name]
        )
        if regression:
            tree = DecisionTreeRegressor(max_depth=6, min_samples_leaf=5, random_state=seed)
            predicted = cross_val_predict(tree, x[columns], y, cv=folds)
            scores[name] = float(r2_score(y, predicted))
        else:
            tree = DecisionTreeClassifier(max_depth=6, min_samples_leaf=5, random_state=seed)
            p = cross_val_predict(tree, x[columns], y, cv=folds, method="predict_proba")
            scores[name] = float(
                roc_auc_score(y, p[:, 1])
                if task == "binary"
                else roc_auc_score(y, p, multi_class="ovr", average="macro")
            )
    return scores


def likely_leaks(frame: pd.DataFrame, schema: Schema, seed: int = 0) -> list[Leak]:
    """The features whose score alone reaches the task's threshold, highest first."""
    task = schema.target.task
    scores = single_feature_scores(frame, schema, seed)
    found = [
        Leak(name, METRIC[task], round(score, 4))
        for name, score in scores.items()
        if score >= THRESHOLD[task]
    ]
    return sorted(found, key=lambda leak: -leak.score)
