"""The canary analysis: its queries evaluated by promtool, its verdicts judged as Argo would.

Synthetic series for a canary's and the stable pods' requests, durations and score bins go
through the AnalysisTemplate's exact queries (arguments filled in as Argo Rollouts fills them)
with `promtool test rules`, which checks each value against the same maths done here
(``pipelines.core.drift`` for the score distance). Those values are then judged by the
template's own conditions and limits (``tests.support.rollouts``): a healthy canary passes,
each bad one fails, and one without traffic pauses for a human.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.stats import binom

from pipelines.core import drift
from pipelines.core.drift import chi2_quantile, degrees_of_freedom, fractions, psi_of_counts
from pipelines.monitoring import canary
from pipelines.params import CanaryParams, MonitorParams, RegisterParams, load_section
from pipelines.serving import names
from tests.support.promtool import needs_promtool, run_rule_tests, series
from tests.support.rollouts import Phase, judge, worst

ROOT = Path(__file__).resolve().parents[2]
PARAMS = load_section("canary", CanaryParams, ROOT / "params.yaml")
BINS = load_section("monitor", MonitorParams, ROOT / "params.yaml").score_bins
MODEL = load_section("register", RegisterParams, ROOT / "params.yaml").model_name
ARGS = {
    "model": MODEL,
    "namespace": f"{MODEL}-production",
    "canary-hash": "6d9f7c",
    "stable-hash": "58b4d1",
}
MINUTES = 6 * int(PARAMS.interval[:-1]) if PARAMS.interval.endswith("m") else 30
WINDOW_MINUTES = int(PARAMS.interval[:-1]) if PARAMS.interval.endswith("m") else 5
BUCKETS = (*names.DURATION_BUCKETS, math.inf)
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Pods:
    """What one side (canary or stable) serves per minute."""

    requests: float  # answered requests per minute
    error_share: float = 0.0  # of those, answered with `error` (a failed outcome)
    durations: Sequence[float] = field(default=())  # share of requests per duration bucket
    scores: Sequence[float] = field(default=())  # rows per minute per score bin


def score_shares() -> np.ndarray:
    """A score distribution over the bins, uneven as real ones are."""
    weights = np.linspace(3.0, 1.0, BINS)
    return weights / weights.sum()


def fast() -> list[float]:
    """Most requests in the fast buckets, a few slower, none beyond max_p99_seconds."""
    shares = np.zeros(len(BUCKETS))
    shares[:3] = (0.6, 0.3, 0.095)  # 5, 10, 25 ms
    shares[4] = 0.005  # 100 ms
    return list(shares)


def slow() -> list[float]:
    """Five percent of the requests take seconds."""
    shares = np.array(fast()) * 0.95
    shares[BUCKETS.index(2.5)] += 0.05
    return list(shares)


def stable_pods() -> Pods:
    rows = 540.0  # per minute; the canary's tenth of the pods serves a ninth as much
    return Pods(rows, 0.0005, fast(), list(score_shares() * rows))


def sampled_scores(shares: np.ndarray, rows_per_minute: float, seed: int) -> list[float]:
    """One window's rows drawn from ``shares`` (noise, as a real canary's), spread per minute."""
    window = int(rows_per_minute * WINDOW_MINUTES)
    counts = np.random.default_rng(seed).multinomial(window, shares)
    return list(counts / WINDOW_MINUTES)


def labels(which: str, **more: str) -> dict[str, str]:
    return {
        "model": MODEL,
        "model_version": "3",
        "namespace": ARGS["namespace"],
        canary.HASH_LABEL: ARGS[f"{which}-hash"],
        **more,
    }


def input_series(which: str, pods: Pods) -> list[dict[str, str]]:
    """Counters that grow linearly, one sample a minute (what a steady canary exports)."""
    minutes = range(MINUTES + 1)
    out = []
    if pods.requests:
        errors = pods.requests * pods.error_share
        for outcome, per_minute in (("ok", pods.requests - errors), ("error", errors)):
            if per_minute:
                code = "200" if outcome == "ok" else "500"
                lab = labels(which, endpoint="predict", code=code, outcome=outcome)
                out.append(series(names.REQUESTS, lab, (per_minute * m for m in minutes)))
        cumulative = np.cumsum(pods.durations) * pods.requests
        for bound, per_minute in zip(BUCKETS, cumulative, strict=True):
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            lab = labels(which, endpoint="predict", le=le)
            name = f"{names.REQUEST_DURATION}_bucket"
            out.append(series(name, lab, (per_minute * m for m in minutes)))
    for index, per_minute in enumerate(pods.scores):
        lab = labels(which, bin=str(index))
        out.append(series(names.SCORE_BIN, lab, (per_minute * m for m in minutes)))
    return out


def histogram_quantile(q: float, shares: Sequence[float]) -> float:
    """Prometheus' histogram_quantile over these bucket shares (linear within a bucket)."""
    cumulative = np.cumsum(shares)
    rank = q * cumulative[-1]
    index = int(np.searchsorted(cumulative, rank - 1e-12))
    if math.isinf(BUCKETS[index]):
        return BUCKETS[-2]
    lower = BUCKETS[index - 1] if index else 0.0
    below = cumulative[index - 1] if index else 0.0
    return lower + (BUCKETS[index] - lower) * (rank - below) / (cumulative[index] - below)


def expected(canary_pods: Pods, stable: Pods) -> dict[str, float | None]:
    """Each metric's value by the batch maths; None: no result (no rows, too few rows)."""
    values: dict[str, float | None] = {"error-ratio": None, "latency-p99": None}
    if canary_pods.requests:
        values["error-ratio"] = canary_pods.error_share
        values["latency-p99"] = float(histogram_quantile(0.99, canary_pods.durations))
    # increase() over the window extrapolates the samples' span to the whole window
    served = np.asarray(canary_pods.scores) * WINDOW_MINUTES
    reference = np.asarray(stable.scores) * WINDOW_MINUTES
    n, m = served.sum(), reference.sum()
    if n < PARAMS.min_rows or m < PARAMS.min_rows:
        values["score-distance"] = None
    else:
        df = degrees_of_freedom(reference)
        spread = 1 / n + 1 / m
        rate = canary.measurement_rate(PARAMS)
        threshold = max(PARAMS.psi_floor, spread * chi2_quantile(1 - rate, df))
        distance = psi_of_counts(served, fractions(reference), m) / threshold
        values["score-distance"] = float(distance)
    return values


def filled(query: str) -> str:
    """The query with its arguments as Argo Rollouts substitutes them."""
    for name, value in ARGS.items():
        query = query.replace("{{args." + name + "}}", value)
    assert "{{" not in query, query
    return query


def check(query: str, value: float | None) -> dict[str, Any]:
    """A promql_expr_test: the query gives ``value`` (or nothing) at the end of the series."""
    if value is None:
        return {"expr": filled(query), "eval_time": f"{MINUTES}m", "exp_samples": []}
    tolerance = TOLERANCE * max(1.0, abs(value))
    return {
        "expr": f"abs(({filled(query)}) - {float(value)!r}) < bool {tolerance!r}",
        "eval_time": f"{MINUTES}m",
        "exp_samples": [{"labels": "{}", "value": 1}],
    }


def metrics() -> dict[str, Mapping[str, Any]]:
    template = canary.analysis_template(PARAMS)
    return {m["name"]: m for m in template["spec"]["metrics"]}


def verdicts(canary_pods: Pods, tmp_path: Path) -> tuple[dict[str, Phase], dict[str, float | None]]:
    """promtool checks every query's value; the template's rules judge those values."""
    stable = stable_pods()
    values = expected(canary_pods, stable)
    by_name = metrics()
    tests = [
        {
            "interval": "1m",
            "input_series": input_series("canary", canary_pods) + input_series("stable", stable),
            "promql_expr_test": [
                check(by_name[n]["provider"]["prometheus"]["query"], v) for n, v in values.items()
            ],
        }
    ]
    run_rule_tests({"groups": []}, tests, tmp_path)
    phases = {}
    for name, value in values.items():
        result = [] if value is None else [value]
        # a steady canary: every measurement of the step sees the same window
        phases[name] = judge(by_name[name], [result] * PARAMS.count)
    return phases, values


HEALTHY_SCORES = sampled_scores(score_shares(), 60.0, seed=0)


@needs_promtool
def test_a_healthy_canary_passes_every_metric(tmp_path):
    phases, values = verdicts(Pods(60.0, 0.0005, fast(), HEALTHY_SCORES), tmp_path)
    assert phases == dict.fromkeys(phases, Phase.SUCCESSFUL), values
    assert worst(list(phases.values())) is Phase.SUCCESSFUL


def shifted_scores() -> list[float]:
    """A canary whose scores moved up by a bin (a model that scores everyone higher)."""
    shares = np.roll(score_shares(), 1)
    return sampled_scores(shares, 60.0, seed=0)


@needs_promtool
@pytest.mark.parametrize(
    ("pods", "failing"),
    [
        (Pods(60.0, 0.05, fast(), HEALTHY_SCORES), "error-ratio"),
        (Pods(60.0, 0.0005, slow(), HEALTHY_SCORES), "latency-p99"),
        (Pods(60.0, 0.0005, fast(), shifted_scores()), "score-distance"),
    ],
    ids=["errors", "slow", "shifted-scores"],
)
def test_a_bad_canary_fails_the_metric_it_breaks_and_only_that(pods, failing, tmp_path):
    phases, values = verdicts(pods, tmp_path)
    assert phases[failing] is Phase.FAILED, values
    assert {n: p for n, p in phases.items() if n != failing} == dict.fromkeys(
        set(phases) - {failing}, Phase.SUCCESSFUL
    ), values
    assert worst(list(phases.values())) is Phase.FAILED  # the rollout aborts


@needs_promtool
def test_a_canary_without_traffic_gets_no_verdict_and_pauses(tmp_path):
    phases, values = verdicts(Pods(0.0), tmp_path)
    assert values == dict.fromkeys(values)  # every query comes back empty
    assert phases == dict.fromkeys(phases, Phase.INCONCLUSIVE)


@needs_promtool
def test_too_few_canary_rows_give_no_score_verdict(tmp_path):
    few = sampled_scores(score_shares(), (PARAMS.min_rows - 1) / WINDOW_MINUTES, seed=1)
    phases, values = verdicts(Pods(60.0, 0.0005, fast(), few), tmp_path)
    assert values["score-distance"] is None
    assert phases["score-distance"] is Phase.INCONCLUSIVE


def test_deploy_components_canary_is_the_generators_output_for_the_committed_params():
    folder = ROOT / "deploy" / "components" / "canary"
    for name, text in canary.render(PARAMS).items():
        assert (folder / name).read_text() == text, f"run `make monitoring`: {name} is stale"


def test_the_servicemonitor_keeps_the_rollouts_pod_label():
    monitor = yaml.safe_load((ROOT / "deploy" / "monitoring" / "servicemonitor.yaml").read_text())
    assert monitor["spec"]["podTargetLabels"] == [canary.HASH_LABEL.replace("_", "-")]


# -- the whole rollout's false-abort budget, simulated --------------------------------------------

ROLLOUTS = 20_000  # healthy rollouts simulated; their false-abort rate is known to about 0.07%


def distances(canary_shares: np.ndarray, n: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Score distances of ``count`` measurements after each weight, for ROLLOUTS rollouts.

    Each measurement sees its own window (``interval`` apart, each over the last ``interval``):
    the canary serves ``n`` rows in it, the stable pods ``n * (100 - weight) / weight``. The
    distance is the query's (:func:`expected`: promtool checks the two agree), vectorised and
    checked against ``drift.psi_of_counts`` on a few measurements.
    """
    stable_shares, rate = score_shares(), canary.measurement_rate(PARAMS)
    out = {}
    for weight in PARAMS.weights:
        m = int(n * (100 - weight) / weight)
        served = rng.multinomial(n, canary_shares, size=(ROLLOUTS, PARAMS.count)).astype(float)
        stable = rng.multinomial(m, stable_shares, size=(ROLLOUTS, PARAMS.count)).astype(float)
        held = stable > 0
        k = held.sum(axis=2)
        q = (served + drift.SMOOTHING * held) / (n + drift.SMOOTHING * k)[..., None]
        p = (stable + drift.SMOOTHING * held) / (m + drift.SMOOTHING * k)[..., None]
        q, p = np.maximum(q, drift.EPSILON), np.maximum(p, drift.EPSILON)
        values = ((q - p) * np.log(q / p)).sum(axis=2)
        limits = {
            d: drift.psi_threshold(n, m, int(d), rate, PARAMS.psi_floor) for d in range(1, BINS)
        }
        threshold = np.vectorize(limits.__getitem__)(np.maximum(k - 1, 1))
        for i in range(3):
            exact = psi_of_counts(served[i, 0], fractions(stable[i, 0]), m)
            assert values[i, 0] == pytest.approx(exact)
        out[weight] = values / threshold
    return out


def aborted(steps: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Which rollouts abort (a step with more than failure_limit failed measurements), and
    which abort at their first step."""
    failed = {w: (d > 1.0).sum(axis=1) > PARAMS.failure_limit for w, d in steps.items()}
    first = failed[PARAMS.weights[0]]
    return np.logical_or.reduce(list(failed.values())), first


@pytest.mark.parametrize("times", [1, 5], ids=["min_rows", "5x min_rows"])
def test_a_healthy_canary_is_rolled_back_at_most_as_often_as_configured(times: int) -> None:
    """Healthy canaries (the stable pods' score distribution), ``count`` measurements after
    each of the ``weights``, judged with ``failure_limit``: the share of rollouts aborted on
    score noise stays within the configured ``canary.false_alarm_rate`` (read from
    params.yaml), up to the simulation's own noise. Measured for 1% (two weights, three
    measurements, failure_limit 0): 8.1% (200 rows) and 6.0% (1,000) when each measurement had
    the whole 1%; 1.8% and 1.1% split over the six; 1.0% and 0.94% split and smoothed."""
    configured = yaml.safe_load((ROOT / "params.yaml").read_text())["canary"]["false_alarm_rate"]
    rate = float(
        aborted(distances(score_shares(), times * PARAMS.min_rows, np.random.default_rng(0)))[
            0
        ].mean()
    )
    # the binomial band's lower edge: the measured rate is not significantly above the budget
    low = binom.ppf(0.001, ROLLOUTS, rate) / ROLLOUTS
    assert low <= configured, f"{rate:.4f} of healthy rollouts aborted, budget {configured}"
    assert rate >= configured / 4  # the budget is spent, not wasted on a blunt test


def test_a_degraded_canary_is_caught_within_its_first_step() -> None:
    """A canary whose scores moved up by a bin (a model that scores everyone higher), at
    ``min_rows`` rows a window: its first analysis aborts it nine times in ten (measured 93%),
    and at twice the rows always."""
    shifted = np.roll(score_shares(), 1)
    for times, least in ((1, 0.9), (2, 0.995)):
        steps = distances(shifted, times * PARAMS.min_rows, np.random.default_rng(1))
        caught = float(aborted(steps)[1].mean())
        assert caught >= least, f"{times}x min_rows: {caught:.3f}"
