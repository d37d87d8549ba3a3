"""A linear model as its numbers: how the scikit-learn models are read back and served.

The linear baselines (and a linear or dummy main model) are scikit-learn pipelines: an imputer
with missing-value indicator columns, a scaler, then the linear model. Their whole maths is a
handful of arrays. :func:`of` takes them out of the fitted pipeline when it is saved, checked
against scikit-learn on probe rows, and ``linear.json`` beside the skops file keeps them; loading
that file needs NumPy alone. So the service scores, and explains, these models without
scikit-learn or skops in its image, ~0.02 ms for one row where the pipeline wants a DataFrame
per call (~2.5 ms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.metrics import Task

FILE = "linear.json"
PROBE_TOLERANCE = 1e-9  # relative beyond 1: the same float64 sums, in another order
# A class the dummy never saw: its log-probability, finite so JSON can hold it (exp() is 0)
LOG_ZERO = -1000.0


@dataclass(frozen=True)
class Linear:
    """The numbers of a fitted linear pipeline, and its output, margins and contributions.

    Attributes:
        task: binary, multiclass or regression.
        fill: Each column's value where it is missing (the imputer's statistics).
        flagged: Positions of the columns whose missingness is an extra input (indicators).
        mean: What the scaler subtracts from each input (columns, then indicators).
        scale: What it divides by.
        coefficients: inputs x outputs (one output; a multiclass model's one per class).
        intercept: One per output.
    """

    task: Task
    fill: np.ndarray
    flagged: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: np.ndarray

    def inputs(self, x: Any) -> np.ndarray:
        """The scaled inputs of rows ``x`` (in the model's column order): rows x inputs."""
        values = np.asarray(x, dtype=np.float64)
        missing = np.isnan(values)
        filled = np.where(missing, self.fill, values)
        if len(self.flagged):
            filled = np.hstack([filled, missing[:, self.flagged].astype(np.float64)])
        scaled: np.ndarray = (filled - self.mean) / self.scale
        return scaled

    def margins(self, x: Any) -> np.ndarray:
        """Rows x outputs: a regression's value, a classifier's log-odds or class scores."""
        margins: np.ndarray = self.inputs(x) @ self.coefficients + self.intercept
        return margins

    def output(self, x: Any) -> np.ndarray:
        """The task's output per row (:func:`pipelines.core.model.predict`)."""
        margin = self.margins(x)
        if self.task == "regression":
            return margin[:, 0]
        if self.task == "binary":
            return 1.0 / (1.0 + np.exp(-margin[:, 0]))
        shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def predict(self, x: Any) -> np.ndarray:
        """A regression's values (scikit-learn's name, so the stages call it as any model)."""
        return self.output(x)

    def predict_proba(self, x: Any) -> np.ndarray:
        """A classifier's probability per class (binary: negative, positive), as scikit-learn."""
        output = self.output(x)
        return np.column_stack([1.0 - output, output]) if self.task == "binary" else output

    def contributions(self, x: Any, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-column contributions to the margin of output ``pick`` (per row), base, margin.

        Coefficient times scaled input; a missing-value indicator counts towards its column.
        ``base + contributions.sum(axis=1) == margin``.
        """
        rows = np.arange(len(pick))
        terms = self.inputs(x) * self.coefficients.T[pick]
        columns = len(self.fill)
        contributions = terms[:, :columns].copy()
        np.add.at(contributions.T, self.flagged, terms[:, columns:].T)
        base = self.intercept[pick]
        return contributions, base, self.margins(x)[rows, pick]

    def as_json(self) -> dict[str, Any]:
        """The numbers, as ``linear.json`` holds them."""
        return {
            "task": self.task,
            "fill": self.fill.tolist(),
            "flagged": self.flagged.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept.tolist(),
        }


def read(path: Path) -> Linear:
    """The model that :func:`pipelines.core.model.save_model` wrote to ``linear.json``."""
    numbers = json.loads(Path(path).read_text())
    arrays = {
        key: np.asarray(numbers[key], dtype=np.intp if key == "flagged" else np.float64)
        for key in ("fill", "flagged", "mean", "scale", "coefficients", "intercept")
    }
    arrays["coefficients"] = arrays["coefficients"].reshape(len(arrays["mean"]), -1)
    return Linear(task=numbers["task"], **arrays)


def of(model: Any, task: Task, columns: int) -> Linear | None:
    """The numbers of a fitted imputer-scaler-linear pipeline or dummy, or None for another.

    Checked on probe rows (missing values included) against the model itself: None where they
    do not give its output, and the model is then read back with skops alone.
    """
    linear = _numbers(model, task, columns)
    if linear is None:
        return None
    probe = np.random.default_rng(0).normal(0, 50, (64, columns))
    probe[::4] = 0.0
    probe[1::4, ::3] = np.nan
    names = getattr(model, "feature_names_in_", None)
    frame: Any = probe if names is None else pd.DataFrame(probe, columns=list(names))
    if task == "regression":
        expected = np.asarray(model.predict(frame), dtype=np.float64)
    else:
        expected = np.asarray(model.predict_proba(frame), dtype=np.float64)
        expected = expected[:, 1] if task == "binary" else expected
    got = linear.output(probe)
    if got.shape != expected.shape:
        return None
    worst = float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))
    return linear if worst <= PROBE_TOLERANCE else None


def _numbers(model: Any, task: Task, columns: int) -> Linear | None:
    zeros, ones = np.zeros(columns), np.ones(columns)
    if hasattr(model, "class_prior_") or hasattr(model, "constant_"):  # the dummy
        if task == "regression":
            intercept = np.atleast_1d(np.asarray(model.constant_, dtype=np.float64)).ravel()
        else:
            prior = np.asarray(model.class_prior_, dtype=np.float64)
            with np.errstate(divide="ignore"):
                logs = np.maximum(np.log(prior), LOG_ZERO)
            intercept = np.array([logs[1] - logs[0]]) if task == "binary" else logs
        empty = np.zeros(0, dtype=np.intp)
        return Linear(
            task, zeros, empty, zeros, ones, np.zeros((columns, len(intercept))), intercept
        )
    steps = [step for _, step in getattr(model, "steps", [])]
    if len(steps) != 3 or not all(
        hasattr(step, attribute)
        for step, attribute in zip(steps, ("statistics_", "mean_", "coef_"), strict=True)
    ):
        return None
    imputer, scaler, estimator = steps
    indicator = getattr(imputer, "indicator_", None)
    flagged = np.asarray([] if indicator is None else indicator.features_, dtype=np.intp)
    inputs = columns + len(flagged)
    return Linear(
        task=task,
        fill=np.asarray(imputer.statistics_, dtype=np.float64),
        flagged=flagged,
        mean=np.asarray(scaler.mean_ if scaler.with_mean else np.zeros(inputs), np.float64),
        scale=np.asarray(scaler.scale_ if scaler.with_std else np.ones(inputs), np.float64),
        coefficients=np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64)).T,
        intercept=np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64)),
    )
