"""What the model's decisions are worth: the value model of ``params.yaml`` (``value:``) on rows.

A classifier decides a class for each row. A binary model *acts* on a row (decides its positive
class) when the probability is at or above its threshold; a multiclass model decides the class of
the highest expected gain (its probabilities times the gain matrix). Each (actual, decided) cell
earns what ``value.gain`` says per row, times the row's amount when ``value.amount`` names a
column. A regression's value is minus the cost of its errors (``value.cost``: per unit below and
above the truth, times the amount). Value is said per 1,000 rows: a row's mean gain times 1,000.

The trivial policies are what a team can do without a model: act on nobody or on everybody
(binary), always decide one class (multiclass), predict one number (regression: the quantile of
the training labels that the two costs favour). A model is worth its lift over the best of them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.core.io import PipelineError
from pipelines.core.metrics import Task, decided_classes, interval
from pipelines.core.weighted import resample_blocks
from pipelines.params import ValueParams

# What eval/metrics.json says of value (Lift.metrics)
KEYS = ("value_per_1000", "value_trivial_per_1000", "value_lift_low", "value_lift_high")
CELLS = ("tn", "fp", "fn", "tp")  # binary cells by (actual, decided): row-major over 0, 1


@dataclass(frozen=True)
class ValueModel:
    """The value section applied to one task's classes.

    ``matrix[actual, decided]`` is a classifier's gain per row (classes in the schema's order;
    binary: 0 negative, 1 positive); a regression has ``under`` and ``over`` instead (and an
    empty matrix).
    """

    task: Task
    currency: str
    unit: str
    amount: str | None
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    under: float = 0.0
    over: float = 0.0

    def gains(
        self, label: np.ndarray, decided: np.ndarray, amount: np.ndarray | None = None
    ) -> np.ndarray:
        """Each row's gain: its cell's (a regression: minus its cost), times its amount."""
        if self.task != "regression":
            gain = self.matrix[np.asarray(label, dtype=np.int64), np.asarray(decided, np.int64)]
        else:
            error = np.asarray(decided, dtype=np.float64) - np.asarray(label, dtype=np.float64)
            gain = -(self.over * np.maximum(error, 0.0) + self.under * np.maximum(-error, 0.0))
        return gain * amount if amount is not None else gain

    def decide(self, probability: np.ndarray) -> np.ndarray:
        """A multiclass model's decision per row: the class of the highest expected gain."""
        return decided_classes(probability, self.matrix)

    def trivial(
        self, label: np.ndarray, amount: np.ndarray | None, constant: float | None = None
    ) -> dict[str, np.ndarray]:
        """Each trivial policy's gain per row, by name (a regression's needs its ``constant``)."""
        rows = len(label)
        if self.task == "binary":
            return {
                "act on nobody": self.gains(label, np.zeros(rows), amount),
                "act on everybody": self.gains(label, np.ones(rows), amount),
            }
        if self.task == "multiclass":
            return {
                f"always class {k}": self.gains(label, np.full(rows, k), amount)
                for k in range(self.matrix.shape[1])
            }
        return {"predict one number": self.gains(label, np.full(rows, constant or 0.0), amount)}

    def per_1000(self, gains: np.ndarray) -> float:
        """The mean gain of a row, times 1,000."""
        return float(np.mean(gains) * 1000.0)

    def expected(
        self,
        probability: Sequence[Any],
        decided: Sequence[int],
        amount: Sequence[float] | None = None,
    ) -> list[float]:
        """A classifier's expected gain of each row's decision, by its own probabilities.

        Binary ``probability`` is the positive class's: p G[1, d] + (1 - p) G[0, d]; multiclass
        each row's probabilities, summed over actual classes as p_a G[a, d]. Times the amount.
        What the service counts, before any label is known. In plain Python, as the service's
        count of each row is: a request holds a row or a few, where NumPy's fixed cost per call
        is most of the time (one row: 5.9 us with NumPy, 0.9 us so).
        """
        gain = self._gain_rows
        binary = self.task == "binary"
        worth = []
        for i, (p, d) in enumerate(zip(probability, decided, strict=True)):
            if binary:
                row = (1.0 - p) * gain[0][d] + p * gain[1][d]
            else:
                row = sum(share * actual[d] for share, actual in zip(p, gain, strict=True))
            worth.append(row * amount[i] if amount is not None else row)
        return worth

    @functools.cached_property
    def _gain_rows(self) -> list[list[float]]:
        """``matrix`` as lists (actual x decided), read by :meth:`expected`."""
        return [[float(cell) for cell in row] for row in self.matrix.tolist()]

    def to_meta(self) -> dict[str, Any]:
        """What ``meta.json`` stores of it (``value``), so the served model carries it."""
        stored: dict[str, Any] = {"currency": self.currency, "unit": self.unit}
        stored["amount"] = self.amount
        if self.task == "regression":
            return stored | {"cost": {"under": self.under, "over": self.over}}
        return stored | {"gain": self.matrix.tolist()}

    @classmethod
    def from_meta(cls, task: Task, stored: dict[str, Any]) -> ValueModel:
        """The value model a ``meta.json`` stored (:meth:`to_meta`)."""
        common = {k: stored[k] for k in ("currency", "unit", "amount")}
        if "cost" in stored:
            return cls(task, **common, under=stored["cost"]["under"], over=stored["cost"]["over"])
        return cls(task, **common, matrix=np.asarray(stored["gain"], dtype=np.float64))


def value_model(params: ValueParams, task: Task, classes: tuple[Any, ...] = ()) -> ValueModel:
    """The value model of ``params`` for a model of ``task`` with ``classes`` (schema order).

    Raises:
        PipelineError: The section does not fit the task, naming the key and what it needs.
    """
    said = (params.currency, params.unit, params.amount)
    if task == "regression":
        if params.cost is None:
            raise PipelineError("value.cost: a regression's value model needs {under:, over:}")
        return ValueModel(task, *said, under=params.cost.under, over=params.cost.over)
    if params.gain is None:
        raise PipelineError(f"value.gain: a {task} model's value model needs a gain per cell")
    if task == "binary":
        gain = params.gain
        wrong = sorted(set(gain) ^ set(CELLS))
        if wrong or not all(isinstance(v, int | float) for v in gain.values()):
            raise PipelineError(
                f"value.gain: a binary model needs a number for each of {', '.join(CELLS)} "
                f"(acting is deciding the positive class); check {wrong or list(gain)}"
            )
        matrix = np.array([float(gain[c]) for c in CELLS]).reshape(2, 2)  # type: ignore[arg-type]
        return ValueModel(task, *said, matrix=matrix)
    names = [str(c) for c in classes]
    matrix = np.zeros((len(names), len(names)))
    for actual, row in params.gain.items():
        if actual not in names or not isinstance(row, dict):
            raise PipelineError(
                f"value.gain.{actual}: a multiclass gain is keyed by actual class, then decided "
                f"class, each one of {names}"
            )
        for decided, worth in row.items():
            if decided not in names:
                raise PipelineError(f"value.gain.{actual}.{decided}: not a class of {names}")
            matrix[names.index(actual), names.index(decided)] = worth
    return ValueModel(task, *said, matrix=matrix)


def amounts(model: ValueModel, raw: Any, ids: np.ndarray) -> np.ndarray | None:
    """The amount column of the raw table (indexed by id) for ``ids``, or None without one.

    Raises:
        PipelineError: The column is missing, not a number, or empty for some of the rows.
    """
    if model.amount is None:
        return None
    if model.amount not in raw.columns:
        raise PipelineError(f"value.amount: the table has no column {model.amount!r}")
    import pandas as pd

    values = pd.to_numeric(raw[model.amount], errors="coerce").reindex(ids).to_numpy(np.float64)
    missing = int((~np.isfinite(values)).sum())
    if missing:
        raise PipelineError(
            f"value.amount: column {model.amount!r} is missing or not a number in {missing} of "
            f"{len(values)} rows: fill it, or name another column"
        )
    return values


def best_threshold(
    model: ValueModel, label: np.ndarray, probability: np.ndarray, amount: np.ndarray | None
) -> tuple[float, float]:
    """The threshold of the highest total gain on these rows, and its value per 1,000 rows.

    Acting on the rows at or above a threshold gains the acting cell's gain instead of the other
    one's: sorted by probability, the best cut is the top of a running sum of those differences,
    cut only between distinct probabilities. The threshold is the midpoint between the last
    probability acted on and the next (the ends: half the way to 0 or to 1). Ties of value go to
    the cut acting on fewer rows.
    """
    p = np.asarray(probability, dtype=np.float64)
    rows = len(p)
    stay = model.gains(label, np.zeros(rows), amount)
    act = model.gains(label, np.ones(rows), amount)
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    running = np.concatenate([[0.0], np.cumsum((act - stay)[order])])
    # a cut after position k acts on ranked[:k]; it is possible where the probability changes
    possible = np.concatenate([[True], ranked[:-1] > ranked[1:], [True]])
    best = int(np.flatnonzero(possible)[np.argmax(running[possible])])
    above = 1.0 if best == 0 else ranked[best - 1]
    below = 0.0 if best == rows else ranked[best]
    total = stay.sum() + running[best]
    return float((above + below) / 2), float(total / rows * 1000.0)


def curve(
    model: ValueModel,
    label: np.ndarray,
    probability: np.ndarray,
    amount: np.ndarray | None,
    points: int = 21,
) -> list[dict[str, float]]:
    """Value per 1,000 rows at evenly spaced thresholds from 0 to 1 (the value curve)."""
    p = np.asarray(probability, dtype=np.float64)
    out = []
    for threshold in np.linspace(0.0, 1.0, points):
        gains = model.gains(label, (p >= threshold).astype(np.int64), amount)
        value = round(model.per_1000(gains), 4)
        out.append({"threshold": round(float(threshold), 4), "value": value})
    return out


def regression_constant(
    model: ValueModel, label: np.ndarray, amount: np.ndarray | None = None
) -> float:
    """The one number of least cost on these labels.

    Their quantile (weighted by the amounts) at under / (under + over).
    """
    y = np.asarray(label, dtype=np.float64)
    weights = np.ones_like(y) if amount is None else np.asarray(amount, dtype=np.float64)
    total = model.under + model.over
    share = 0.5 if total == 0 else model.under / total
    order = np.argsort(y, kind="stable")
    cumulative = np.cumsum(weights[order])
    position = int(np.searchsorted(cumulative, share * cumulative[-1]))
    return float(y[order][min(position, len(y) - 1)])


@dataclass(frozen=True)
class Lift:
    """A model's value against the best trivial policy's, with the paired bootstrap interval."""

    value: float
    trivial: str
    trivial_value: float
    low: float
    high: float

    def metrics(self) -> dict[str, float]:
        """What ``eval/metrics.json`` carries of it."""
        numbers = (self.value, self.trivial_value, self.low, self.high)
        return dict(zip(KEYS, numbers, strict=True))


def lift(
    model: ValueModel,
    gains: np.ndarray,
    trivial: dict[str, np.ndarray],
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> Lift:
    """The model's value per 1,000 rows and its lift over the best trivial policy.

    The interval is a paired percentile bootstrap of the mean difference per row (the same rows
    drawn for the model and the policy), times 1,000.
    """
    name = max(trivial, key=lambda k: trivial[k].mean())
    difference = gains - trivial[name]
    blocks = resample_blocks(len(difference), resamples, seed)
    samples = np.concatenate([c.dot(difference) / c.sum(axis=1) for c in blocks])
    low, high = interval(samples * 1000.0, confidence)
    return Lift(model.per_1000(gains), name, model.per_1000(trivial[name]), low, high)


def neutral_section(task: Task, classes: tuple[Any, ...] = ()) -> dict[str, Any]:
    """A value section that states no business (``value:`` of a new model's params).

    A correct decision gains 1 and a wrong one 0 (a classifier's value per 1,000 rows is then
    its accuracy times 1,000); a regression's error costs 1 per unit either way (minus its MAE
    times 1,000). Decisions stay those of the model's probabilities; the owner replaces it.
    """
    common: dict[str, Any] = {"currency": "units", "unit": "rows", "amount": None}
    if task == "regression":
        return common | {"cost": {"under": 1.0, "over": 1.0}}
    if task == "binary":
        return common | {"gain": {"tp": 1.0, "fp": 0.0, "fn": 0.0, "tn": 1.0}}
    return common | {"gain": {str(c): {str(c): 1.0} for c in classes}}
