"""How Argo Rollouts judges an analysis: its measurement and metric rules, without a cluster.

A measurement's ``result`` (for Prometheus, the list of the query's sample values) is judged by
the metric's ``successCondition`` and ``failureCondition`` (Argo Rollouts' analysis docs and
``utils/evaluate``):

- an error evaluating either condition (``result[0]`` of an empty result) makes it **Error**;
- neither condition given: **Successful**; only one given: the other is its negation;
- the failure condition true: **Failed** (it wins over success); else the success condition
  true: **Successful**; else **Inconclusive**.

A metric's measurements then decide the metric: **Failed** once more than ``failureLimit``
failed (default 0), **Inconclusive** once more than ``inconclusiveLimit`` were inconclusive
(default 0), **Error** once more than ``consecutiveErrorLimit`` errors came in a row (default 4);
else **Successful** when ``count`` measurements are done (errors do not count), else Running.
A failed or errored analysis aborts the rollout; an inconclusive one pauses it.

Conditions are expr-lang expressions; this module reads the subset the generated templates use
(``result``, ``result[i]``, ``len()``, ``isNaN()``, numbers, ``true``/``false``, comparisons,
``&&``/``and``, ``||``/``or``, ``!``/``not``, parentheses) and refuses anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipelines.core.io import PipelineError

Value = float | bool | list[float]


class Phase(StrEnum):
    """The phases of a measurement, a metric and an analysis run, as Argo Rollouts names them."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    RUNNING = "Running"


class UnsupportedConditionError(PipelineError):
    """A condition uses expr-lang beyond the subset this module evaluates."""


class EvaluationError(Exception):
    """A condition could not be evaluated on this result (Argo: the measurement is an Error)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_]\w*)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\]]))"
)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_WORDS = {"and": "&&", "or": "||", "not": "!"}
_FUNCTIONS = ("len", "isNaN")
Node = Callable[[list[float]], Value]


def _tokens(condition: str) -> list[str]:
    tokens, position = [], 0
    while position < len(condition.rstrip()):
        match = _TOKEN.match(condition, position)
        if match is None or match.end() == position:
            raise UnsupportedConditionError(
                f"condition {condition!r}: cannot read {condition[position:].strip()!r}; "
                f"supported: {_SUPPORTED}"
            )
        token = match.group("number") or match.group("name") or match.group("op")
        tokens.append(_WORDS.get(token, token))
        position = match.end()
    return tokens


_SUPPORTED = (
    "result, result[<int>], len(...), isNaN(...), numbers, true, false, "
    "< <= > >= == !=, && and, || or, ! not, parentheses"
)


@dataclass
class _Parser:
    condition: str
    tokens: list[str]
    at: int = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            want = f"{expected!r}" if expected else "more"
            raise UnsupportedConditionError(
                f"condition {self.condition!r}: expected {want}, found {token or 'the end'!r}"
            )
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.either()
        if self.peek() is not None:
            raise UnsupportedConditionError(
                f"condition {self.condition!r}: unexpected {self.peek()!r}; supported: {_SUPPORTED}"
            )
        return node

    def either(self) -> Node:
        left = self.both()
        while self.peek() == "||":
            self.take()
            left = _or(left, self.both())
        return left

    def both(self) -> Node:
        left = self.unary()
        while self.peek() == "&&":
            self.take()
            left = _and(left, self.unary())
        return left

    def unary(self) -> Node:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda result: not _boolean(inner(result))
        left = self.primary()
        if self.peek() in _COMPARE:
            compare = _COMPARE[self.take()]
            right = self.primary()
            return lambda result: compare(_number(left(result)), _number(right(result)))
        return left

    def primary(self) -> Node:
        word = self.take()
        if word == "(":
            inner = self.either()
            self.take(")")
            return inner
        if word in {"true", "false"}:
            return lambda _: word == "true"
        if word[0].isdigit() or word[0] == ".":
            number = float(word)
            return lambda _: number
        return self.reference(word)

    def reference(self, word: str) -> Node:
        """``result``, ``result[i]`` or a function call."""
        if word == "result":
            if self.peek() != "[":
                return lambda result: result
            self.take("[")
            index = self.take()
            if not index.isdigit():
                raise UnsupportedConditionError(
                    f"condition {self.condition!r}: result[...] takes a whole number"
                )
            self.take("]")
            return lambda result: _item(result, int(index))
        if word in _FUNCTIONS:
            self.take("(")
            argument = self.either()
            self.take(")")
            if word == "len":
                return lambda result: float(len(_list(argument(result))))
            return lambda result: math.isnan(_number(argument(result)))
        raise UnsupportedConditionError(
            f"condition {self.condition!r}: {word!r} is not supported; supported: {_SUPPORTED}"
        )


def _or(left: Node, right: Node) -> Node:
    return lambda result: _boolean(left(result)) or _boolean(right(result))


def _and(left: Node, right: Node) -> Node:
    return lambda result: _boolean(left(result)) and _boolean(right(result))


def _item(result: list[float], index: int) -> float:
    if index >= len(result):
        raise EvaluationError(f"index {index} out of range of a result of {len(result)}")
    return result[index]


def _boolean(value: Value) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(f"expected a boolean, got {value!r}")
    return value


def _number(value: Value) -> float:
    if isinstance(value, bool) or not isinstance(value, float):
        raise EvaluationError(f"expected a number, got {value!r}")
    return value


def _list(value: Value) -> list[float]:
    if not isinstance(value, list):
        raise EvaluationError(f"len() of {value!r}, not of a list")
    return value


def compile_condition(condition: str) -> Callable[[Sequence[float]], bool]:
    """A condition as a function of ``result``.

    Raises:
        UnsupportedConditionError: the condition is not in the supported subset.
    """
    node = _Parser(condition, _tokens(condition)).parse()

    def evaluate(result: Sequence[float]) -> bool:
        return _boolean(node([float(v) for v in result]))

    return evaluate


def measure(result: Sequence[float], success: str = "", failure: str = "") -> Phase:
    """The phase of one measurement whose value is ``result``.

    Raises:
        UnsupportedConditionError: a condition is not in the supported subset.
    """
    checks = [compile_condition(c) if c else None for c in (success, failure)]
    try:
        passed, failed = (check(result) if check else None for check in checks)
    except EvaluationError:
        return Phase.ERROR
    if passed is None and failed is None:
        return Phase.SUCCESSFUL
    if failed is None:
        failed = not passed
    if passed is None:
        passed = not failed
    if failed:
        return Phase.FAILED
    return Phase.SUCCESSFUL if passed else Phase.INCONCLUSIVE


def _limit(metric: Mapping[str, Any], key: str, default: int) -> int:
    value = metric.get(key, default)
    return int(value)


def assess(phases: Sequence[Phase], metric: Mapping[str, Any]) -> Phase:
    """The phase of a metric (an AnalysisTemplate's ``metrics`` item) after these measurements."""
    failed = inconclusive = done = errors_in_row = 0
    for phase in phases:
        if phase is Phase.ERROR:
            errors_in_row += 1
            continue
        errors_in_row = 0
        done += 1
        failed += phase is Phase.FAILED
        inconclusive += phase is Phase.INCONCLUSIVE
    if failed > _limit(metric, "failureLimit", 0):
        return Phase.FAILED
    if inconclusive > _limit(metric, "inconclusiveLimit", 0):
        return Phase.INCONCLUSIVE
    if errors_in_row > _limit(metric, "consecutiveErrorLimit", 4):
        return Phase.ERROR
    count = metric.get("count")
    return Phase.SUCCESSFUL if count is not None and done >= int(count) else Phase.RUNNING


def judge(metric: Mapping[str, Any], results: Sequence[Sequence[float]]) -> Phase:
    """The phase of ``metric`` after measurements of these results, taken in order.

    Measurements stop as soon as the metric is decided, as the controller stops taking them.
    """
    success, failure = metric.get("successCondition", ""), metric.get("failureCondition", "")
    phases: list[Phase] = []
    for result in results:
        phases.append(measure(result, success, failure))
        verdict = assess(phases, metric)
        if verdict is not Phase.RUNNING:
            return verdict
    return assess(phases, metric)


# Argo Rollouts ranks a failure worst, then an error, then an inconclusive metric
_ORDER = (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE, Phase.RUNNING, Phase.SUCCESSFUL)


def worst(phases: Sequence[Phase]) -> Phase:
    """An analysis run's phase from its metrics' phases: the worst of them."""
    return min(phases, key=_ORDER.index) if phases else Phase.SUCCESSFUL
