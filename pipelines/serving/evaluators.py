"""A fast exact path of a served tree model's output, checked against XGBoost when loaded.

XGBoost 3.2 spends ~0.25 ms setting up each call: :func:`treelite_evaluator` scores small
batches with treelite's evaluator instead. It is compared with XGBoost on probe rows (missing
values included) and gives None, with a warning in the log, where it is not exact: the model
is then scored the slow, right way. (Linear models are NumPy's maths already:
:mod:`pipelines.core.linear`.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

PROBE_TOLERANCE = 1e-6  # float32 sums in another order differ by ~1e-8 (relative, beyond 1)
LOG = logging.getLogger(__name__)


def treelite_evaluator(booster: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """Outputs of ``booster`` by treelite's evaluator, or None where that is not exact.

    The converted model is checked against XGBoost on probe rows (both sides of splits and the
    missing-value branches); a model treelite cannot convert, or converts differently, is
    served by XGBoost alone, slower but right, with a warning in the log.
    """
    import treelite

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

    predict = _predictor(converted)

    def output(x: np.ndarray) -> np.ndarray:
        return np.asarray(predict(x), dtype=np.float64).reshape(len(x), *shape)

    one_by_one = np.concatenate([output(row[None]) for row in probe])
    # relative beyond 1: a regression's float32 sums of values near 10 differ by ~1e-6
    worst = float(np.max(np.abs(one_by_one - expected) / np.maximum(1.0, np.abs(expected))))
    if not worst <= PROBE_TOLERANCE:
        LOG.warning("treelite differs from XGBoost by %.2g: XGBoost scores every request", worst)
        return None
    return output


def _predictor(converted: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The prediction of treelite on one thread, with its configuration parsed once.

    ``gtil.predict`` builds and parses the same configuration on every call: 10 of a one-row
    call's 48 us here. Its own worker function takes a parsed one; where a treelite release
    no longer has it, the public call is used (the probe checks whichever it is).
    """
    from treelite import gtil

    try:
        from treelite.gtil.gtil import GTILConfig, _predict_impl

        config = GTILConfig(predict_type="default", nthread=1)
    except (ImportError, TypeError):
        return functools.partial(gtil.predict, converted, nthread=1)
    return functools.partial(_predict_impl, converted, config=config)
