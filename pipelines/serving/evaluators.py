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
    """What ``gtil.predict(converted, x, nthread=1)`` answers, at half its cost for one row.

    ``gtil.predict`` parses its configuration, asks the library for the model's types and the
    output's shape, and checks its input on every call: 48 us for one row here, of which the
    trees take 20. This calls treelite's C function ``TreeliteGTILPredict`` with all of that
    done once (23 us), for the encoder's rows (C-ordered float32 of the model's width;
    other input takes the public call). A treelite whose Python module no longer has the
    names used here gets the public call throughout; the probe checks whichever it is.
    """
    import ctypes

    from treelite import gtil

    public = functools.partial(gtil.predict, converted, nthread=1)
    try:
        from treelite.core import _LIB, _check_call
        from treelite.gtil.gtil import GTILConfig
        from treelite.util import c_str, typestr_to_numpy_type

        config = GTILConfig(predict_type="default", nthread=1)
        input_type, output_type = converted.input_type, converted.output_type
        width = converted.num_feature
        # (rows, targets, classes): the output's shape for one row, asked once
        dims, ndim = ctypes.POINTER(ctypes.c_uint64)(), ctypes.c_uint64()
        _check_call(
            _LIB.TreeliteGTILGetOutputShape(
                converted.handle, ctypes.c_uint64(1), config.handle, ctypes.byref(dims),
                ctypes.byref(ndim),
            )
        )  # fmt: skip
        per_row = tuple(int(d) for d in dims[: ndim.value])[1:]
    except (ImportError, AttributeError, TypeError):
        return public
    dtype, out_dtype = typestr_to_numpy_type(input_type), typestr_to_numpy_type(output_type)
    named_type = c_str(input_type)

    def predict(x: np.ndarray) -> np.ndarray:
        if x.dtype != dtype or x.ndim != 2 or x.shape[1] != width or not x.flags.c_contiguous:
            return np.asarray(public(x))
        out = np.zeros((len(x), *per_row), dtype=out_dtype)
        _check_call(
            _LIB.TreeliteGTILPredict(  # the handles of objects this function keeps alive
                converted.handle, ctypes.c_void_p(x.ctypes.data), named_type,
                ctypes.c_uint64(len(x)), ctypes.c_void_p(out.ctypes.data), config.handle,
            )
        )  # fmt: skip
        return out

    return predict
