"""The evaluator of Argo Rollouts' analysis rules, against the semantics of its analysis docs."""

from __future__ import annotations

import math

import pytest

from tests.support.rollouts import (
    Phase,
    UnsupportedConditionError,
    assess,
    compile_condition,
    judge,
    measure,
    worst,
)

NAN = math.nan
GUARDED = "len(result) > 0 && !isNaN(result[0]) && result[0] <= 0.01"


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result[0] >= 0.95", [0.96], True),
        ("result[0] >= 0.95", [0.9], False),
        ("result[0] < 1 and result[1] > 2", [0.5, 3], True),
        ("not (result[0] == 1) || false", [1], False),
        ("len(result) == 0", [], True),
        ("isNaN(result[0])", [NAN], True),
        ("result[0] <= 0.01", [NAN], False),  # NaN compares false either way
        ("result[0] > 0.01", [NAN], False),
        (GUARDED, [], False),  # && stops before result[0]
        (GUARDED, [NAN], False),
        (GUARDED, [0.005], True),
        ("true", [], True),
        ("1e-3 < result[0]", [0.01], True),
    ],
)
def test_conditions(condition, result, expected):
    assert compile_condition(condition)(result) is expected


@pytest.mark.parametrize(
    "condition",
    ["result[0] > 0.9 ? true : false", "all(result, {# > 0})", "result[0] + 1 > 2", "result['a']"],
)
def test_anything_else_is_refused_with_what_is_supported(condition):
    with pytest.raises(UnsupportedConditionError, match=r"supported|expected|whole number"):
        compile_condition(condition)


@pytest.mark.parametrize(
    ("result", "success", "failure", "phase"),
    [
        ([0.5], "", "", Phase.SUCCESSFUL),  # no condition: successful unless an error
        ([0.5], "result[0] < 1", "", Phase.SUCCESSFUL),
        ([2.0], "result[0] < 1", "", Phase.FAILED),  # success alone: its negation fails
        ([2.0], "", "result[0] > 1", Phase.FAILED),
        ([0.5], "", "result[0] > 1", Phase.SUCCESSFUL),  # failure alone: its negation succeeds
        ([5.0], "result[0] > 1", "result[0] > 2", Phase.FAILED),  # both true: failure wins
        ([1.5], "result[0] < 1", "result[0] > 2", Phase.INCONCLUSIVE),  # neither
        ([], "result[0] < 1", "", Phase.ERROR),  # argo-rollouts #1466: empty result
        ([], GUARDED, "len(result) > 0 && result[0] > 0.01", Phase.INCONCLUSIVE),
        (
            [NAN],
            GUARDED,
            "len(result) > 0 && !isNaN(result[0]) && result[0] > 0.01",
            Phase.INCONCLUSIVE,
        ),
    ],
)
def test_a_measurement(result, success, failure, phase):
    assert measure(result, success, failure) is phase


S, F, N, E = Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE, Phase.ERROR  # N: no verdict


@pytest.mark.parametrize(
    ("phases", "metric", "verdict"),
    [
        ([S, S, S], {"count": 3}, S),
        ([S, S], {"count": 3}, Phase.RUNNING),
        ([S, F], {"count": 3}, F),  # failureLimit defaults to 0
        ([F, S, S], {"count": 3, "failureLimit": 1}, S),
        ([F, F], {"count": 3, "failureLimit": 1}, F),
        ([N], {"count": 3}, N),  # inconclusiveLimit defaults to 0
        ([N, S, S], {"count": 3, "inconclusiveLimit": 1}, S),
        ([E, E, E, E], {"count": 3}, Phase.RUNNING),  # consecutiveErrorLimit defaults to 4
        ([E, E, E, E, E], {"count": 3}, E),
        ([E, E, S, E, E], {"count": 3, "consecutiveErrorLimit": 2}, Phase.RUNNING),
        ([E, E, S, S, E, S], {"count": 3, "consecutiveErrorLimit": 2}, S),  # errors don't count
        ([E, E, E], {"count": 3, "consecutiveErrorLimit": 2}, E),
        ([S, S, S, S], {}, Phase.RUNNING),  # no count: runs until terminated
    ],
)
def test_a_metric(phases, metric, verdict):
    assert assess(phases, metric) is verdict


def test_judge_stops_at_the_first_decision_and_the_worst_metric_decides_the_run():
    metric = {"count": 3, "successCondition": "result[0] < 1"}
    assert judge(metric, [[0.5], [2.0], [0.5]]) is F
    assert judge(metric, [[0.5], [0.5], [0.5]]) is S
    assert worst([S, N, F, E]) is F
    assert worst([S, N, E]) is E
    assert worst([S, N]) is N
