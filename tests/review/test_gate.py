"""The gate's bootstrap and verdicts, on constructed predictions with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as sk

from pipelines.core.metrics import BETTER, VALUE, classification_metrics, point_metrics
from pipelines.core.metrics import METRICS as REGISTRY
from pipelines.core.metrics import BinaryPredictions as Predictions
from pipelines.params import GateParams, MetricRule, ParamsError, load_section
from pipelines.review import gate
from pipelines.review.gate import Side
from tests.support.columns import project_schema
from tests.support.targets import binary_only

METRICS = REGISTRY["binary"]
SCHEMA = project_schema()

ROOT = Path(__file__).resolve().parents[2]
ROWS = 800
GATED = ["roc_auc", "pr_auc", "log_loss", "brier", "f1"]


def params(**rules: dict[str, object]) -> GateParams:
    default = {
        "roc_auc": {"better": "higher", "floor": 0.6, "tolerance": 0.01},
        "pr_auc": {"better": "higher", "floor": 0.3, "tolerance": 0.02},
        "log_loss": {"better": "lower", "ceiling": 0.8, "tolerance": 0.02},
        "brier": {"better": "lower", "ceiling": 0.3, "tolerance": 0.01},
        "f1": {"better": "higher", "floor": 0.2, "tolerance": 0.03},
    }
    return GateParams.model_validate(
        {"resamples": 500, "seed": 0, "confidence": 0.95, "metrics": default | rules}
    )


def predictions(signal: float, seed: int = 1, ids: np.ndarray | None = None) -> Predictions:
    """Scores for fixed labels: the larger ``signal``, the better they separate the classes."""
    labels = np.random.default_rng(0).random(ROWS) < 0.3
    noise = np.random.default_rng(seed).normal(size=ROWS)
    p = 1 / (1 + np.exp(-(signal * (labels - 0.3) * 2 + noise - 1)))
    return Predictions(
        ids=np.arange(ROWS) if ids is None else ids,
        label=labels.astype(np.int8),
        probability=p,
        predicted=(p >= 0.5).astype(np.int8),
    )


def side(p: Predictions) -> Side:
    """Predictions with the metrics file the evaluate stage would write for them."""
    written = classification_metrics(p.label, p.probability, 0.5)
    return Side(p, {k: round(v, 6) for k, v in written.items()})


BASE = predictions(1.5)


@pytest.mark.parametrize("ties", [False, True])
def test_resampled_metrics_equal_scikit_learn_with_and_without_weights(ties: bool) -> None:
    p = BASE
    if ties:  # many tied scores: AUC counts ties half, AP groups them
        rounded = np.round(p.probability, 1)
        p = Predictions(p.ids, p.label, rounded, (rounded >= 0.5).astype(np.int8))
    rows = p.rows()
    counts = np.vstack([np.ones(ROWS), np.random.default_rng(5).poisson(1.0, ROWS)])
    for weights in counts:
        w = weights[None, rows.order]
        expected = {
            "roc_auc": sk.roc_auc_score(p.label, p.probability, sample_weight=weights),
            "pr_auc": sk.average_precision_score(p.label, p.probability, sample_weight=weights),
            "log_loss": sk.log_loss(p.label, p.probability, sample_weight=weights),
            "brier": sk.brier_score_loss(p.label, p.probability, sample_weight=weights),
            "accuracy": sk.accuracy_score(p.label, p.predicted, sample_weight=weights),
            "precision": sk.precision_score(p.label, p.predicted, sample_weight=weights),
            "recall": sk.recall_score(p.label, p.predicted, sample_weight=weights),
            "f1": sk.f1_score(p.label, p.predicted, sample_weight=weights),
        }
        for name, value in expected.items():
            assert METRICS[name].weighted(rows, w)[0] == pytest.approx(value, abs=1e-12), name


def test_point_metrics_equal_the_evaluate_stage() -> None:
    written = classification_metrics(BASE.label, BASE.probability, 0.5)
    computed = point_metrics(BASE, list(METRICS))
    for name, value in computed.items():
        assert value == pytest.approx(written[name], abs=1e-12)


def test_a_better_model_is_improved_and_passes() -> None:
    result = gate.compare(side(BASE), side(predictions(3.0)), params())
    assert result.passed
    assert result.mode == "paired"
    roc = next(m for m in result.metrics if m.name == "roc_auc")
    assert roc.verdict == "improved"
    assert roc.low is not None
    assert roc.low > 0
    assert roc.delta == pytest.approx(roc.pr - roc.base)  # type: ignore[operator]


def test_a_worse_model_regresses_and_fails_naming_the_metric() -> None:
    result = gate.compare(side(BASE), side(predictions(0.5)), params())
    assert not result.passed
    verdicts = {m.name: m.verdict for m in result.metrics}
    assert verdicts["roc_auc"] == "regressed"
    assert any(f.startswith("roc_auc regressed by -") for f in result.failures)


def test_identical_predictions_are_unchanged_and_pass() -> None:
    result = gate.compare(side(BASE), side(BASE), params())
    assert result.passed
    assert result.failures == []
    for m in result.metrics:
        assert m.verdict == "unchanged"
        assert (m.low, m.high, m.delta) == (0.0, 0.0, 0.0)


def test_noise_within_tolerance_does_not_fail() -> None:
    """Another seed of the same model: small, symmetric changes stay within the tolerances."""
    other = predictions(1.5, seed=1)
    jitter = np.random.default_rng(9).normal(0, 0.01, ROWS)
    p = np.clip(other.probability + jitter, 0, 1)
    result = gate.compare(
        side(BASE),
        side(Predictions(other.ids, other.label, p, (p >= 0.5).astype(np.int8))),
        params(),
    )
    assert result.passed, result.failures
    assert {m.verdict for m in result.metrics} <= {"unchanged", "inconclusive", "improved"}


def test_a_nan_metric_fails_closed() -> None:
    pr = side(BASE)
    pr.metrics["roc_auc"] = math.nan
    result = gate.compare(side(BASE), pr, params())
    assert not result.passed
    assert "roc_auc is missing or NaN in the PR's metrics" in result.failures
    assert next(m for m in result.metrics if m.name == "roc_auc").verdict == "invalid"


def test_nan_probabilities_fail_closed() -> None:
    p = BASE.probability.copy()
    p[3] = np.nan
    broken = Predictions(BASE.ids, BASE.label, p, BASE.predicted)
    result = gate.compare(side(BASE), Side(broken, side(BASE).metrics), params())
    assert not result.passed
    assert "the PR's predictions are unusable: 1 probabilities are NaN or outside [0, 1]" in (
        result.failures
    )
    assert {m.verdict for m in result.metrics} == {"invalid"}


@pytest.mark.parametrize("which", ["pr", "base"])
def test_a_missing_metric_fails_closed(which: str) -> None:
    base, pr = side(BASE), side(BASE)
    del (pr if which == "pr" else base).metrics["brier"]
    result = gate.compare(base, pr, params())
    assert not result.passed
    owner = "the PR" if which == "pr" else "BASE"
    assert f"brier is missing or NaN in {owner}'s metrics" in result.failures


def test_a_broken_floor_fails_even_when_nothing_changed() -> None:
    rules = params(roc_auc={"better": "higher", "floor": 0.99, "tolerance": 0.01})
    result = gate.compare(side(BASE), side(BASE), rules)
    assert not result.passed
    roc = next(m for m in result.metrics if m.name == "roc_auc")
    assert roc.bound_broken
    assert roc.verdict == "unchanged"
    assert any(f.startswith("roc_auc ") and "below the floor 0.99" in f for f in result.failures)


def test_a_broken_ceiling_fails() -> None:
    rules = params(log_loss={"better": "lower", "ceiling": 0.1, "tolerance": 0.02})
    result = gate.compare(side(BASE), side(BASE), rules)
    assert any("log_loss" in f and "above the ceiling 0.1" in f for f in result.failures)


def test_other_test_rows_fall_back_to_an_unpaired_bootstrap() -> None:
    shifted = predictions(1.5, ids=np.arange(ROWS) + 100)
    result = gate.compare(side(BASE), side(shifted), params())
    assert result.mode == "unpaired"
    assert "100 test ids only in BASE and 100 only in the PR" in result.notes[0]


def test_relabelled_rows_fall_back_to_an_unpaired_bootstrap() -> None:
    labels = BASE.label.copy()
    labels[:7] = 1 - labels[:7]
    relabelled = Predictions(BASE.ids, labels, BASE.probability, BASE.predicted)
    result = gate.compare(side(BASE), side(relabelled), params())
    assert result.mode == "unpaired"
    assert "7 test rows have a different label" in result.notes[0]


@pytest.mark.parametrize("where", ["BASE", "PR", "both"])
def test_a_repeated_id_falls_back_to_an_unpaired_bootstrap(where: str) -> None:
    # Row 1 takes row 0's id. Pairing by id would then compare row 0 of the PR twice and never
    # row 1 (or fail on an ambiguous lookup) instead of saying the rows cannot be paired.
    repeated = BASE.ids.copy()
    repeated[1] = repeated[0]
    twice = Predictions(repeated, BASE.label, BASE.probability, BASE.predicted)
    base = twice if where in ("BASE", "both") else BASE
    pr = twice if where in ("PR", "both") else BASE
    result = gate.compare(side(base), side(pr), params())
    assert result.mode == "unpaired"
    assert result.notes == [
        "The test rows differ (an id appears twice in the predictions): the bootstrap is unpaired."
    ]


def test_pairing_follows_ids_not_row_order() -> None:
    shuffled = BASE.take(np.random.default_rng(2).permutation(ROWS))
    result = gate.compare(side(BASE), side(shuffled), params())
    assert result.mode == "paired"
    assert all(m.verdict == "unchanged" and m.low == m.high == 0 for m in result.metrics)


def test_pairing_makes_intervals_narrower() -> None:
    pr = predictions(1.6, seed=1)
    names = ["roc_auc"]
    paired = gate.bootstrap_differences(BASE, pr, names, resamples=500, seed=0, paired=True)
    unpaired = gate.bootstrap_differences(BASE, pr, names, resamples=500, seed=0, paired=False)
    assert np.std(paired["roc_auc"]) < np.std(unpaired["roc_auc"]) / 2


def test_the_bootstrap_is_seeded_and_blocking_does_not_change_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pr = predictions(2.0, seed=3)
    one = gate.bootstrap_differences(BASE, pr, GATED, resamples=300, seed=4, paired=True)
    again = gate.bootstrap_differences(BASE, pr, GATED, resamples=300, seed=4, paired=True)
    monkeypatch.setattr(gate, "BLOCK_CELLS", ROWS * 7)  # 43 blocks of 7 resamples
    blocked = gate.bootstrap_differences(BASE, pr, GATED, resamples=300, seed=4, paired=True)
    for name in GATED:
        np.testing.assert_array_equal(one[name], again[name])
        np.testing.assert_allclose(one[name], blocked[name], rtol=0, atol=1e-12)
    other = gate.bootstrap_differences(BASE, pr, GATED, resamples=300, seed=5, paired=True)
    assert not np.array_equal(one["roc_auc"], other["roc_auc"])


def test_the_first_model_is_held_to_the_floors_only() -> None:
    result = gate.compare(None, side(predictions(0.5)), params())
    assert result.passed
    assert result.mode == "first model"
    assert {m.verdict for m in result.metrics} == {"new"}
    assert all(m.base is None and m.low is None for m in result.metrics)
    strict = params(pr_auc={"better": "higher", "floor": 0.9, "tolerance": 0.02})
    failed = gate.compare(None, side(predictions(0.5)), strict)
    assert not failed.passed
    assert [f.split()[0] for f in failed.failures] == ["pr_auc"]


@pytest.mark.parametrize(
    ("better", "low", "high", "expected"),
    [
        ("higher", 0.001, 0.02, "improved"),
        ("higher", -0.005, 0.005, "unchanged"),
        ("higher", -0.03, -0.02, "regressed"),
        ("higher", -0.03, 0.0, "inconclusive"),
        ("higher", -0.005, 0.03, "inconclusive"),
        ("higher", 0.0, 0.0, "unchanged"),
        ("lower", -0.02, -0.001, "improved"),
        ("lower", 0.02, 0.03, "regressed"),
        ("lower", -0.005, 0.005, "unchanged"),
        ("lower", 0.0, 0.03, "inconclusive"),
        ("higher", math.nan, 0.01, "invalid"),
    ],
)
def test_verdicts(better: str, low: float, high: float, expected: str) -> None:
    bound = {"floor": None} if better == "higher" else {"ceiling": None}
    rule = MetricRule.model_validate({"better": better, "tolerance": 0.01, **bound})
    assert gate.verdict(low, high, rule) == expected


def test_the_committed_gate_gates_metrics_of_the_schemas_task() -> None:
    loaded = load_section("gate", GateParams, ROOT / "params.yaml")
    task = SCHEMA.target.task
    assert loaded.metrics
    assert set(loaded.metrics) - {VALUE} <= set(REGISTRY[task]), f"metrics of a {task} model"
    for name, rule in loaded.metrics.items():
        assert rule.better == BETTER[name], name


@binary_only(SCHEMA, "a binary model's gate holds roc_auc, pr_auc, log_loss, brier and f1")
def test_the_committed_gate_section_loads() -> None:
    loaded = load_section("gate", GateParams, ROOT / "params.yaml")
    assert set(GATED) <= set(loaded.metrics)
    assert loaded.metrics["log_loss"].better == "lower"
    assert loaded.metrics["log_loss"].ceiling is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": {"auc": {"better": "higher", "tolerance": 0.01}}}, "unknown metrics ['auc']"),
        (
            {"metrics": {"roc_auc": {"better": "higher", "ceiling": 0.9, "tolerance": 0.01}}},
            "takes a floor, not a ceiling",
        ),
        (
            {"metrics": {"brier": {"better": "lower", "floor": 0.1, "tolerance": 0.01}}},
            "takes a ceiling, not a floor",
        ),
        ({"confidence": 1.5}, "gate.confidence"),
        (
            {"metrics": {"f1": {"better": "up", "tolerance": 0.01}}},
            "metrics.f1.better: higher is better, not up",
        ),
        (
            {"metrics": {"roc_auc": {"better": "lower", "ceiling": 0.9, "tolerance": 0.01}}},
            "metrics.roc_auc.better: higher is better, not lower",
        ),
    ],
)
def test_bad_gate_params_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    section = {"resamples": 1000, "seed": 0, "confidence": 0.95} | change
    section.setdefault("metrics", {"f1": {"better": "higher", "tolerance": 0.01}})
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump({"gate": section}))
    with pytest.raises(ParamsError, match="gate") as error:
        load_section("gate", GateParams, file)
    assert message in str(error.value)


def test_each_metric_is_better_the_way_the_registry_says() -> None:
    """A perfect model scores better than a coin on every metric, in the registry's direction."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    perfect = np.where(y == 1, 0.9, 0.1)
    coin = rng.uniform(0.0, 1.0, 400)
    for name, metric in METRICS.items():
        good = metric.point(Predictions.at_threshold(y, y, perfect, 0.5))
        bad = metric.point(Predictions.at_threshold(y, y, coin, 0.5))
        assert metric.sign * (good - bad) > 0, name


def test_predictions_from_a_frame_need_the_four_columns() -> None:
    frame = pd.DataFrame({"id": [1], "label": [0], "probability": [0.2]})
    with pytest.raises(ValueError, match=r"missing \['predicted'\]"):
        Predictions.from_frame(frame)


# --- value per 1,000 rows ---------------------------------------------------------------------


def decided_at(p: Predictions, threshold: float) -> Side:
    """The predictions decided at ``threshold``, with their metrics file."""
    at = Predictions(p.ids, p.label, p.probability, (p.probability >= threshold).astype(np.int8))
    written = classification_metrics(p.label, p.probability, threshold)
    return Side(at, {k: round(v, 6) for k, v in written.items()})


def value_gains(gain: dict[str, float]) -> gate.Gains:
    """Each row's gain, computed here cell by cell (not by the value module under test)."""
    cells = {(1, 1): gain["tp"], (0, 1): gain["fp"], (1, 0): gain["fn"], (0, 0): gain["tn"]}

    def gains_of(p: Predictions) -> np.ndarray:
        pairs = zip(p.label.tolist(), p.predicted.tolist(), strict=True)
        return np.array([cells[(int(a), int(d))] for a, d in pairs])

    return gains_of


GAIN = {"tp": 5.0, "fp": -1.0, "fn": 0.0, "tn": 0.0}


def test_a_pr_that_raises_auc_but_loses_value_beyond_tolerance_fails() -> None:
    """The PR ranks better but decides at 0.9 where acting pays from 1/6: value drops."""
    base, pr = decided_at(predictions(1.0), 0.2), decided_at(predictions(2.0), 0.9)
    rules = params(value_per_1000={"tolerance": 50.0})
    result = gate.compare(base, pr, rules, gains_of=value_gains(GAIN))
    by_name = {m.name: m for m in result.metrics}
    assert by_name["roc_auc"].verdict == "improved"
    value = by_name[VALUE]
    expected = (
        np.mean(value_gains(GAIN)(pr.predictions)) - np.mean(value_gains(GAIN)(base.predictions))
    ) * 1000
    assert value.delta == pytest.approx(expected)
    assert value.verdict == "regressed"
    assert not result.passed
    assert any(f.startswith(f"{VALUE} regressed") for f in result.failures)


def test_the_same_decisions_leave_value_unchanged_and_no_value_model_fails_closed() -> None:
    base = decided_at(predictions(1.0), 0.2)
    rules = params(value_per_1000={"tolerance": 50.0})
    same = gate.compare(base, base, rules, gains_of=value_gains(GAIN))
    assert {m.name: m.verdict for m in same.metrics}[VALUE] == "unchanged"
    missing = gate.compare(base, base, rules)
    assert not missing.passed
    assert any(VALUE in f for f in missing.failures)
