"""The drift maths against closed-form values, and the false-alarm rate of the PSI threshold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2

from pipelines.core import drift, features
from pipelines.core.drift import EPSILON, Binning
from pipelines.core.profile import binning_of, distribution
from pipelines.params import FeaturizeParams, MonitorParams, load_section
from pipelines.schema import Schema
from tests.support.columns import PARAMS

# --- PSI and KS ---------------------------------------------------------------------------------


def test_psi_of_known_fractions_with_an_empty_bin_floored_at_epsilon() -> None:
    served, reference = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    # Two bins of (0.5 - 0.25) ln 2; the empty served bin counts as EPSILON.
    expected = 2 * 0.25 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    assert drift.psi(served, reference) == pytest.approx(expected, rel=1e-12)
    assert drift.psi(reference, reference) == 0.0
    # Both empty: the floor on both sides gives a zero term, not NaN.
    assert drift.psi([1.0, 0.0], [1.0, 0.0]) == 0.0


def test_psi_is_symmetric_and_grows_with_the_shift() -> None:
    p = [0.4, 0.3, 0.2, 0.1]
    small, large = [0.35, 0.3, 0.2, 0.15], [0.1, 0.2, 0.3, 0.4]
    assert drift.psi(small, p) == pytest.approx(drift.psi(p, small))
    assert 0 < drift.psi(small, p) < drift.psi(large, p)


@pytest.mark.parametrize(
    ("served", "reference", "ordered", "expected"),
    [
        ([0.2, 0.3, 0.5, 0.0], [0.5, 0.3, 0.2, 0.0], 3, 0.3),  # cumulative .2 .5 1 vs .5 .8 1
        ([0.5, 0.5, 0.0], [0.4, 0.4, 0.2], 2, 0.2),  # the missing bin shows in the last gap
        ([0.1, 0.9, 0.0], [0.1, 0.9, 0.0], 2, 0.0),
        ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 2, 1.0),  # all missing against none missing
    ],
)
def test_ks_is_the_largest_cumulative_gap_over_the_ordered_bins(
    served: list[float], reference: list[float], ordered: int, expected: float
) -> None:
    assert drift.ks(served, reference, ordered) == pytest.approx(expected)


def test_ks_of_a_categorical_feature_is_undefined() -> None:
    assert math.isnan(drift.ks([0.5, 0.5], [0.1, 0.9], 0))


def test_ks_threshold_is_the_two_sample_critical_distance() -> None:
    alpha, n, m = 0.05, 400, 900
    expected = math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(1 / n + 1 / m)
    assert drift.ks_threshold(n, m, alpha) == pytest.approx(expected)
    assert drift.ks_threshold(0, m, alpha) == math.inf


# --- bins ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "bins", "expected"),
    [
        ([0, 1] * 50, 10, (0.0,)),
        ([0] * 5 + [1] * 95, 10, (0.0,)),  # the ones hold every decile: 0 still gets its bin
        ([0] * 95 + [1] * 5, 10, (0.0,)),
        ([1] * 10, 10, ()),  # one value: one bin
        ([1, 1, 1, 1, 2, 2, 3, 3, 4, 5], 5, (1.0, 2.0, 3.0)),  # ties collapse
        ([1, 2, 3, 100, 100, 100, 100, 100], 4, (2.0, 3.0)),  # a capped maximum keeps a bin
        (list(range(100)), 4, (24.0, 49.0, 74.0)),
        ([math.nan, 0.0, 1.0, math.nan], 10, (0.0,)),  # missing values are not binned by value
        ([math.nan, math.nan], 10, ()),  # all missing
        ([], 10, ()),
    ],
)
def test_quantile_edges(values: list[float], bins: int, expected: tuple[float, ...]) -> None:
    assert drift.quantile_edges(values, bins) == expected


def test_the_edge_values_fall_in_the_bin_they_close() -> None:
    binning = Binning("numeric", edges=(1.0, 2.5))
    assert binning.labels == ["0", "1", "2", "(missing)"]
    assert binning.ordered == 3
    assert binning.assign([1.0, 1.0001, 2.5, 2.6]).tolist() == [0, 1, 1, 2]


NUMERIC_VALUES = [0, 1, 1.0, 1.0001, 2.5, 3, -1e300, 1e300, None, math.nan, np.float32(2.0)]
CATEGORY_VALUES = ["a", "b", "c", "", None, math.nan, "A", "b "]


@pytest.mark.parametrize(
    ("binning", "values"),
    [
        (Binning("numeric", edges=(1.0, 2.5)), NUMERIC_VALUES),
        (Binning("numeric", edges=()), NUMERIC_VALUES),
        (Binning("categorical", categories=("a", "b")), CATEGORY_VALUES),
    ],
    ids=["numeric", "numeric-one-bin", "categorical"],
)
def test_assign_equals_index_of_elementwise(binning: Binning, values: list[object]) -> None:
    expected = [binning.index_of(v) for v in values]
    assert binning.assign(values).tolist() == expected
    assert binning.assign(pd.Series(values, dtype=object)).tolist() == expected
    counts = binning.counts(values)
    assert counts.sum() == len(values)
    assert counts.tolist() == np.bincount(expected, minlength=len(binning.labels)).tolist()


def test_categorical_bins_put_unknown_values_in_other_and_missing_last() -> None:
    binning = Binning("categorical", categories=("a", "b"))
    assert binning.labels == ["a", "b", "(other)", "(missing)"]
    assert binning.ordered == 0
    assert binning.assign(["b", "zzz", None]).tolist() == [1, 2, 3]


def test_degrees_of_freedom_count_the_bins_the_reference_holds_rows_in() -> None:
    assert drift.degrees_of_freedom([0.5, 0.3, 0.2, 0.0, 0.0]) == 2
    assert drift.degrees_of_freedom([1.0, 0.0]) == 1  # never below 1


# --- the threshold ------------------------------------------------------------------------------


# Wilson and Hilferty's approximation is poorest at the fewest degrees of freedom: measured
# against scipy, up to 3.0% at df 1 (alpha 0.001), 2.5% at df 1 (alpha 0.05 and 0.1), 2.3% and
# 1.8% at df 2 and 3 (alpha 0.001); within 0.8% everywhere for alpha 0.005 and 0.01.
SMALL_DF_TOLERANCE = {1: 0.035, 2: 0.025, 3: 0.02}


@pytest.mark.parametrize("alpha", [0.001, 0.005, 0.01, 0.025, 0.05, 0.1])
def test_chi2_quantile_is_within_one_and_a_half_percent_of_scipy(alpha: float) -> None:
    for df in range(1, 61):
        exact = chi2.ppf(1 - alpha, df)
        tolerance = SMALL_DF_TOLERANCE.get(df, 0.015)
        assert drift.chi2_quantile(1 - alpha, df) == pytest.approx(exact, rel=tolerance), df


@pytest.mark.parametrize("alpha", [0.005, 0.01])
def test_chi2_quantile_is_within_one_percent_at_the_usual_false_alarm_rates(alpha: float) -> None:
    for df in range(1, 61):
        exact = chi2.ppf(1 - alpha, df)
        assert drift.chi2_quantile(1 - alpha, df) == pytest.approx(exact, rel=0.01), df


def test_psi_threshold_is_the_scaled_quantile_or_the_floor() -> None:
    n, m, df, alpha = 1000, 5000, 9, 0.01
    scaled = (1 / n + 1 / m) * drift.chi2_quantile(1 - alpha, df)
    assert drift.psi_threshold(n, m, df, alpha, 0.0) == pytest.approx(scaled)
    assert drift.psi_threshold(n, m, df, alpha, 0.5) == 0.5
    assert drift.psi_threshold(0, m, df, alpha, 0.0) == math.inf
    assert drift.psi_threshold(n, 0, df, alpha, 0.0) == pytest.approx(
        drift.chi2_quantile(1 - alpha, df) / n
    )


# --- false alarms without drift -----------------------------------------------------------------

ALPHA = 0.01  # the rate of one test in the tests of psi_threshold itself
REFERENCES = 4000  # reference samples of M rows per distribution
WINDOWS = 5  # served windows of N rows per reference sample: few, so trials are near independent


def false_alarm_rate(
    fractions: np.ndarray, m: int, n: int, alpha: float, rng: np.random.Generator
) -> float:
    """Share of windows without drift whose PSI crosses ``psi_threshold`` (floor 0)."""
    return float(alarms(fractions, m, n, alpha, rng).mean())


def alarms(
    fractions: np.ndarray, m: int, n: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Which of REFERENCES x WINDOWS windows without drift cross ``psi_threshold`` (floor 0).

    Both sides are samples of the same fractions: the reference of ``m`` rows (as the profile
    stage counts the training rows) and each served window of ``n`` rows.
    """
    p = np.asarray(fractions, dtype=np.float64)
    p = p / p.sum()
    reference = rng.multinomial(m, p, size=REFERENCES) / m
    served = rng.multinomial(n, p, size=(REFERENCES, WINDOWS)) / n
    q, r = np.maximum(served, EPSILON), np.maximum(reference, EPSILON)[:, None, :]
    values = ((q - r) * np.log(q / r)).sum(axis=2)
    df = np.maximum(np.count_nonzero(reference > 0, axis=1) - 1, 1)
    thresholds = {d: drift.psi_threshold(n, m, int(d), alpha, 0.0) for d in np.unique(df)}
    limit = np.array([thresholds[d] for d in df])
    # The vectorised PSI is drift.psi, window by window.
    assert values[0, 0] == pytest.approx(drift.psi(served[0, 0], reference[0]))
    return np.asarray(values > limit[:, None])


def band(alpha: float, trials: int) -> tuple[float, float]:
    """The binomial 99.9% band of a measured rate around ``alpha``."""
    return (
        float(binom.ppf(0.0005, trials, alpha)) / trials,
        float(binom.ppf(0.9995, trials, alpha)) / trials,
    )


@pytest.fixture(scope="module")
def monitor() -> MonitorParams:
    return load_section("monitor", MonitorParams, PARAMS)


SYNTHETIC = {
    "deciles": [0.1] * 10 + [0.0],
    "skewed categories": [0.5, 0.3, 0.15, 0.05, 0.0, 0.0],
    "two values": [0.2, 0.8, 0.0],
}


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("n", [500, 5000])
def test_false_alarm_rate_of_a_synthetic_profile(name: str, n: int) -> None:
    # At 200 rows deciles alarm at 1.35% for 1%: the chi-square approximation of PSI runs high
    # on small windows (the model's rate is checked at monitor.min_rows below).
    rng = np.random.default_rng(0)
    alpha = ALPHA
    rate = false_alarm_rate(np.array(SYNTHETIC[name]), 5000, n, alpha, rng)
    low, high = band(alpha, REFERENCES * WINDOWS)
    assert low <= rate <= high, f"{name}, N={n}: {rate:.4f} outside [{low:.4f}, {high:.4f}]"


def test_near_empty_bins_raise_the_false_alarm_rate_of_small_windows(
    monitor: MonitorParams,
) -> None:
    # A known limit of the chi-square approximation: a bin expected to hold about one row of a
    # window (0.2% of 500 rows) alarms too often; larger windows bring the rate back.
    rare = np.array([0.6, 0.3, 0.09, 0.008, 0.002, 0.0, 0.0])
    alpha = ALPHA
    # A reference of 50,000 rows: its own rare bins are then well counted too.
    small = false_alarm_rate(rare, 50_000, 500, alpha, np.random.default_rng(0))
    assert monitor.min_rows <= 500
    large = false_alarm_rate(rare, 50_000, 20_000, alpha, np.random.default_rng(0))
    assert small > 2 * alpha
    low, high = band(alpha, REFERENCES * WINDOWS)
    assert low <= large <= high


def test_the_models_false_alarm_rate_is_the_configured_one(
    raw: pd.DataFrame, schema: Schema, monitor: MonitorParams
) -> None:
    """Windows without drift, every feature drawn from the reference fractions the profile stage
    computes from the train split, each tested at ``per_test_rate``: the share of windows where
    some feature alarms is the configured rate, within half of it at ten times ``min_rows``. At
    ``min_rows`` itself the chi-square approximation runs high in the tail the threshold sits
    in: measured 1.27x the configured rate on the example's table, 1.17x and 2.19x on the two
    tables the template tests generate (bins under ``min_share`` merged; 4.5x without).
    """
    featurize = load_section("featurize", FeaturizeParams, PARAMS)
    train_rows, _ = features.split(raw, schema, featurize.test_size, featurize.seed)
    rng = np.random.default_rng(0)
    alpha = drift.per_test_rate(monitor.false_alarm_rate, len(schema.features))
    expected = 1 - (1 - alpha) ** len(schema.features)  # the score is not part of this family
    for n in (monitor.min_rows, 10 * monitor.min_rows):
        alarmed = np.zeros((REFERENCES, WINDOWS), dtype=bool)
        for name in schema.features:
            share = drift.min_share(monitor.min_rows)
            binning = binning_of(name, train_rows[name], schema, monitor.bins, share)
            reference = distribution(binning, train_rows[name])
            alarmed |= alarms(np.array(reference.fractions), reference.rows, n, alpha, rng)
        rate = float(alarmed.mean())
        high = 2.5 if n == monitor.min_rows else 1.5
        assert 0.5 * expected <= rate <= high * expected, f"N={n}: {rate:.4f} vs {expected:.4f}"
