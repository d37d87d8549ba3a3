"""Fast exact paths of a served model's output, each checked against its library when loaded.

XGBoost 3.2 spends ~0.25 ms setting up each call: :func:`treelite_evaluator` scores small
batches with treelite's evaluator instead. scikit-learn's linear pipeline wants a DataFrame per
call (~2.5 ms for one row): :func:`linear_evaluator` does the same maths in numpy (~0.02 ms).
Both are compared with the library on probe rows (missing values included) and give None, with
a warning in the log, where they are not exact: the model is then scored the slow, right way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.core.metrics import Task
from pipelines.core.model import predict

PROBE_TOLERANCE = 1e-6  # float32 sums in another order differ by ~1e-8 (relative, beyond 1)
LOG = logging.getLogger(__name__)


def linear_evaluator(
    pipeline: Any, task: Task, columns: tuple[str, ...]
) -> Callable[[np.ndarray], np.ndarray] | None:
    """A linear pipeline's output (imputer, scaler, model) in numpy, or None where not exact.

    The same maths as scikit-learn's steps: missing values replaced by the imputer's statistics
    with its indicator columns appended, standardised, then the linear model's margin (a
    regression's value, a binary classifier's sigmoid, a multiclass one's softmax). Checked
    against the pipeline on probe rows (missing values included); a mismatch leaves the model
    to scikit-learn, with a warning in the log.
    """
    import pandas as pd

    imputer, scaler, model = (step for _, step in pipeline.steps)
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    indicator = getattr(imputer, "indicator_", None)
    flagged = np.asarray([] if indicator is None else indicator.features_, dtype=np.intp)
    mean = np.asarray(scaler.mean_ if scaler.with_mean else 0.0, dtype=np.float64)
    scale = np.asarray(scaler.scale_ if scaler.with_std else 1.0, dtype=np.float64)
    coefficients = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64)).T
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))

    def output(x: np.ndarray) -> np.ndarray:
        values = np.asarray(x, dtype=np.float64)
        missing = np.isnan(values)
        filled = np.where(missing, statistics, values)
        if len(flagged):
            filled = np.hstack([filled, missing[:, flagged].astype(np.float64)])
        margin = ((filled - mean) / scale) @ coefficients + intercept
        if task == "regression":
            return margin[:, 0]
        if task == "binary":
            return 1.0 / (1.0 + np.exp(-margin[:, 0]))
        shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    probe = np.random.default_rng(0).normal(0, 50, (64, len(columns)))
    probe[::4] = 0.0
    probe[1::4, ::3] = np.nan
    try:
        expected = np.asarray(predict(pipeline, pd.DataFrame(probe, columns=list(columns)), task))
        worst = float(np.max(np.abs(output(probe) - expected) / np.maximum(1.0, np.abs(expected))))
    except (ValueError, IndexError) as error:  # a step of another shape than these
        LOG.warning("the linear model's numpy path failed its check (%s): scikit-learn", error)
        return None
    if not worst <= PROBE_TOLERANCE:
        LOG.warning("numpy differs from scikit-learn by %.2g: scikit-learn scores", worst)
        return None
    return output


def treelite_evaluator(booster: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """Outputs of ``booster`` by treelite's evaluator, or None where that is not exact.

    The converted model is checked against XGBoost on probe rows (both sides of splits and the
    missing-value branches); a model treelite cannot convert, or converts differently, is
    served by XGBoost alone, slower but right, with a warning in the log.
    """
    import treelite
    from treelite import gtil

    try:
        converted = treelite.frontend.from_xgboost(booster)
    except treelite.TreeliteError as error:
        LOG.warning("treelite cannot convert this model (%s): XGBoost scores every request", error)
        return None

    probe = np.random.default_rng(0).uniform(-1, 100, (64, booster.num_features()))
    probe[::4] = 0.0
    probe[1::4, ::3] = np.nan
    probe = probe.astype(np.float32)
    expected = np.asarray(booster.inplace_predict(probe, validate_features=False))
    # gtil answers (rows, targets, classes): one value per row, or one per class (multiclass)
    shape = expected.shape[1:]

    def output(x: np.ndarray) -> np.ndarray:
        predicted = gtil.predict(converted, x, nthread=1)
        return np.asarray(predicted, dtype=np.float64).reshape(len(x), *shape)

    one_by_one = np.concatenate([output(row[None]) for row in probe])
    # relative beyond 1: a regression's float32 sums of values near 10 differ by ~1e-6
    worst = float(np.max(np.abs(one_by_one - expected) / np.maximum(1.0, np.abs(expected))))
    if not worst <= PROBE_TOLERANCE:
        LOG.warning("treelite differs from XGBoost by %.2g: XGBoost scores every request", worst)
        return None
    return output
