"""The value model: gains, the tuned threshold, trivial policies, and the committed example.

Every expectation is computed here independently (loops over rows and thresholds), never with
the function under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.core.io import PipelineError
from pipelines.core.value import best_threshold, regression_constant, value_model
from pipelines.params import ValueParams

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
ASYMMETRIC = {"tp": 5.0, "fp": -1.0, "fn": 0.0, "tn": 0.0}  # acting pays above p = 1/6


def binary(gain: dict[str, float], amount: str | None = None) -> ValueParams:
    return ValueParams(currency="EUR", gain=gain, amount=amount)


def rows(n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities, and an amount per row."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 3.0, n).round(3)  # rounded: ties between rows, as a model's scores have
    return (rng.random(n) < p).astype(int), p, rng.uniform(10, 100, n)


def brute_force(gain: dict[str, float], y: np.ndarray, p: np.ndarray, amount: np.ndarray) -> float:
    """The best total gain over every threshold that changes a decision, row by row."""
    cells = {(1, 1): gain["tp"], (0, 1): gain["fp"], (1, 0): gain["fn"], (0, 0): gain["tn"]}
    best = -np.inf
    for t in [*np.unique(p), 1.0 + 1e-9]:
        total = sum(cells[(int(a), int(q >= t))] * m for a, q, m in zip(y, p, amount, strict=True))
        best = max(best, total)
    return float(best / len(y) * 1000)


def total(
    gain: dict[str, float], y: np.ndarray, p: np.ndarray, amount: np.ndarray, t: float
) -> float:
    cells = {(1, 1): gain["tp"], (0, 1): gain["fp"], (1, 0): gain["fn"], (0, 0): gain["tn"]}
    values = [cells[(int(a), int(q >= t))] * m for a, q, m in zip(y, p, amount, strict=True)]
    return float(np.mean(values) * 1000)


@pytest.mark.parametrize("weighted", [False, True], ids=["per-row", "amount"])
def test_the_tuned_threshold_earns_what_a_brute_force_search_finds(weighted: bool) -> None:
    y, p, amount = rows()
    weights = amount if weighted else np.ones(len(y))
    model = value_model(binary(ASYMMETRIC, "amount" if weighted else None), "binary")
    threshold, worth = best_threshold(model, y, p, amount if weighted else None)
    expected = brute_force(ASYMMETRIC, y, p, weights)
    assert worth == pytest.approx(expected, rel=1e-12)
    assert total(ASYMMETRIC, y, p, weights, threshold) == pytest.approx(expected, rel=1e-12)
    assert 0 < threshold < 1


def test_with_asymmetric_gains_the_tuned_threshold_beats_one_half() -> None:
    y, p, _ = rows()
    model = value_model(binary(ASYMMETRIC), "binary")
    threshold, worth = best_threshold(model, y, p, None)
    ones = np.ones(len(y))
    assert threshold < 0.5  # a caught positive is worth five false alarms: act more
    assert worth > total(ASYMMETRIC, y, p, ones, 0.5) + 1.0


def test_acting_on_nobody_wins_when_acting_never_pays() -> None:
    y, p, _ = rows()
    model = value_model(binary({"tp": -1.0, "fp": -1.0, "fn": 0.0, "tn": 0.0}), "binary")
    threshold, worth = best_threshold(model, y, p, None)
    assert worth == 0.0
    assert threshold > p.max()


def test_each_rows_gain_is_its_cell_times_its_amount() -> None:
    model = value_model(binary({"tp": 3.0, "fp": -1.0, "fn": -2.0, "tn": 0.5}, "a"), "binary")
    label, decided = np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])
    gains = model.gains(label, decided, np.array([10.0, 20.0, 30.0, 40.0]))
    assert gains.tolist() == [30.0, -20.0, -60.0, 20.0]


def test_a_multiclass_model_decides_the_class_of_highest_expected_gain() -> None:
    gain = {"a": {"a": 1.0}, "b": {"b": 1.0, "c": 0.9}, "c": {"c": 1.0}}
    model = value_model(ValueParams(currency="u", gain=gain), "multiclass", ("a", "b", "c"))
    probability = np.array([[0.5, 0.3, 0.2], [0.1, 0.5, 0.4], [0.45, 0.1, 0.45]])
    expected = [
        int(np.argmax([sum(row[a] * model.matrix[a, d] for a in range(3)) for d in range(3)]))
        for row in probability
    ]
    assert model.decide(probability).tolist() == expected == [0, 2, 2]


def test_a_regression_costs_its_errors_and_its_constant_minimises_them() -> None:
    model = value_model(ValueParams(currency="u", cost={"under": 3.0, "over": 1.0}), "regression")
    y = np.arange(1.0, 101.0)
    assert model.gains(np.array([10.0, 10.0]), np.array([8.0, 13.0])).tolist() == [-6.0, -3.0]
    constant = regression_constant(model, y)
    costs = {c: -model.gains(y, np.full(len(y), c)).sum() for c in np.arange(0.0, 101.0, 0.5)}
    assert costs[constant] == pytest.approx(min(costs.values()))


@pytest.mark.parametrize(
    ("task", "section", "key"),
    [
        ("binary", {"currency": "u", "gain": {"tp": 1, "fp": 0, "fn": 0}}, "value.gain"),
        ("binary", {"currency": "u", "cost": {"under": 1, "over": 1}}, "value.gain"),
        ("multiclass", {"currency": "u", "gain": {"z": {"a": 1}}}, "value.gain.z"),
        ("multiclass", {"currency": "u", "gain": {"a": {"z": 1}}}, "value.gain.a.z"),
        ("regression", {"currency": "u", "gain": {"tp": 1}}, "value.cost"),
    ],
)
def test_a_value_model_that_does_not_fit_the_task_names_the_key(
    task: str, section: dict[str, object], key: str
) -> None:
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        value_model(ValueParams.model_validate(section), task, ("a", "b", "c"))  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [None, [10.0, 0.0, 55.5, 2.0]])
def test_a_binary_decisions_expected_gain_is_its_probability_of_each_cell(
    amount: list[float] | None,
) -> None:
    model = value_model(binary(ASYMMETRIC, amount="charge" if amount else None), "binary")
    p, decided = [0.1, 0.5, 0.9, 1 / 6], [0, 1, 1, 1]
    got = model.expected(p, decided, amount)
    cells = {(1, 1): 5.0, (0, 1): -1.0, (1, 0): 0.0, (0, 0): 0.0}
    for i, (q, d) in enumerate(zip(p, decided, strict=True)):
        worth = q * cells[(1, d)] + (1 - q) * cells[(0, d)]
        assert got[i] == pytest.approx(worth * (amount[i] if amount else 1.0), abs=1e-12)
    assert got[3] == pytest.approx(0.0, abs=1e-12)  # acting at p = 1/6 breaks even


def test_a_multiclass_decisions_expected_gain_sums_its_column_by_the_probabilities() -> None:
    gain = {"a": {"a": 1.0, "b": -2.0}, "b": {"b": 3.0, "c": -1.0}, "c": {"a": -4.0, "c": 2.0}}
    model = value_model(ValueParams(currency="u", gain=gain), "multiclass", ("a", "b", "c"))
    got = model.expected([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]], [1, 0], [2.0, 3.0])
    assert got[0] == pytest.approx((0.2 * -2.0 + 0.5 * 3.0 + 0.3 * 0.0) * 2.0)
    assert got[1] == pytest.approx(-4.0 * 3.0)
