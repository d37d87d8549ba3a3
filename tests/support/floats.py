"""Tolerances for comparing a model's numbers, fitted to float32 and to the value's magnitude.

A model scores float32 features, and XGBoost sums in float32: an absolute tolerance that fits
one table's margins (about 3 on the example) fails on a table whose margins reach 9 or 20. These
bounds grow with what the compared value is made of, so a test keeps its bite on every table.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def sum_tolerance(terms: Iterable[float], count: int) -> float:
    """How far a float32 sum of ``count`` terms can be from the exact sum of ``terms``.

    The classic bound for recursive summation: ``count * eps * sum(|term|)``.
    """
    return count * EPS32 * sum(abs(t) for t in terms)


def logit_tolerance(p: float, dtype: np.dtype[np.floating]) -> float:
    """How far a log-odds recovered from a probability stored as ``dtype`` can be off.

    One unit in the last place of ``p`` moves ``log(p / (1 - p))`` by ``spacing(p) / (p (1 - p))``:
    a float32 probability of 0.99986 (margin 8.9) pins the margin only to about 5e-4.
    """
    return 2 * float(np.spacing(dtype.type(p))) / (p * (1 - p))


def saturation_margin(dtype: np.dtype[np.floating]) -> float:
    """The log-odds beyond which a probability stored as ``dtype`` rounds to 1 (about 16.6 in
    float32): there a margin is only known to lie past it."""
    below_one = float(np.finfo(dtype).epsneg)
    return float(np.log((1 - below_one) / below_one))
