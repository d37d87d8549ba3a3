"""Shadow scoring without a server: what is logged, the time budget, the pause, the sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core import features
from pipelines.core.model import BASELINE, load_model
from pipelines.params import RegisterParams, load_section
from pipelines.schema import Schema
from pipelines.serving import fallback, http, scoring, shadow
from pipelines.serving.fallback import CircuitBreaker
from pipelines.serving.request_log import RequestLog
from tests.support.columns import PARAMS
from tests.support.training import packed_model

MODEL_NAME = load_section("register", RegisterParams, PARAMS).model_name
BUDGET = 0.05  # seconds


class Clock:
    """A clock each call moves by ``step`` seconds: a scoring call between two reads takes it."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def packed(raw: pd.DataFrame, schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return packed_model(raw, schema, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def models(packed: Path) -> tuple[scoring.ServedModel, scoring.ServedModel]:
    """The model and, as its challenger, its own baseline (another model of the same schema)."""
    info = {"name": MODEL_NAME}
    served = scoring.load_served(packed, info, f"{MODEL_NAME}:model")
    return served, scoring.load_served(
        packed / BASELINE, info, f"{MODEL_NAME}:challenger", served.schema
    )


@pytest.fixture(scope="module")
def rows(raw: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in raw[list(schema.features)].head(4).to_dict("records")
    ]


def twin(
    challenger: scoring.ServedModel, directory: Path, clock: Clock, cooldown: float = 30.0
) -> shadow.Shadow:
    breaker = CircuitBreaker(failures=1, cooldown=cooldown, clock=clock)
    logs = (
        RequestLog(directory / shadow.CHAMPION, 1.0, "model-version"),
        RequestLog(directory / shadow.CHALLENGER, 1.0, "challenger-version"),
    )
    return shadow.Shadow(challenger, 1.0, BUDGET, breaker, logs, clock=clock)


def lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for file in sorted(folder.glob("*.jsonl")) for line in file.open()]


def answered(model: scoring.ServedModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = model.predict(rows)
    return [p.model_dump(mode="json") for p in response.predictions]  # type: ignore[attr-defined]


def test_both_answers_are_logged_under_the_request_id_each_by_its_own_model(
    models: tuple[scoring.ServedModel, scoring.ServedModel],
    rows: list[dict[str, Any]],
    packed: Path,
    tmp_path: Path,
) -> None:
    model, challenger = models
    cut = twin(challenger, tmp_path, Clock())
    assert cut.score("req-1", rows, answered(model, rows)) == "scored"
    champion_lines = lines(tmp_path / shadow.CHAMPION)
    challenger_lines = lines(tmp_path / shadow.CHALLENGER)
    ids = [f"req-1/{i}" for i in range(len(rows))]
    assert [line["id"] for line in champion_lines] == ids
    assert [line["id"] for line in challenger_lines] == ids
    assert {line["model_version"] for line in challenger_lines} == {"challenger-version"}
    assert [line["record"] for line in challenger_lines] == rows
    # Each side's answer is its own model's, computed independently here from the saved files
    matrix = features.encode(pd.DataFrame(rows), model.schema)
    for folder_lines, directory in (
        (champion_lines, packed),
        (challenger_lines, packed / BASELINE),
    ):
        loaded = load_model(directory)
        expected = loaded.predict(matrix[loaded.meta["features"]])
        got = [
            line.get("probability", line.get("prediction"))
            if "probabilities" not in line
            else [line["probabilities"][str(c)] for c in model.classes]
            for line in folder_lines
        ]
        np.testing.assert_allclose(np.asarray(got, dtype=float), expected, rtol=1e-5)


def test_a_call_over_budget_is_logged_and_pauses_shadow_scoring_until_the_cooldown(
    models: tuple[scoring.ServedModel, scoring.ServedModel],
    rows: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    model, challenger = models
    clock = Clock(step=BUDGET * 1.5)  # every call appears to take more than the budget
    cut = twin(challenger, tmp_path, clock, cooldown=10.0)
    answers = answered(model, rows[:1])
    assert cut.score("a", rows[:1], answers) == "late"  # logged all the same
    assert cut.score("b", rows[:1], answers) == "paused"
    assert [line["id"] for line in lines(tmp_path / shadow.CHALLENGER)] == ["a"]
    clock.step = 0.0
    clock.now += 10.0  # the cool-down is over: the next call tries again, in time
    assert cut.score("c", rows[:1], answers) == "scored"
    assert cut.score("d", rows[:1], answers) == "scored"


def test_a_failing_challenger_pauses_shadow_scoring_and_logs_nothing(
    models: tuple[scoring.ServedModel, scoring.ServedModel],
    rows: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    model, challenger = models
    broken = scoring.ServedModel(
        schema=challenger.schema,
        encoder=challenger.encoder,
        scorer=challenger.scorer,
        block=challenger.block,
        classes=challenger.classes,
    )
    object.__setattr__(
        broken,
        "output",
        fallback.Faults.parse("raise").wrap("primary", broken.output),
    )
    cut = twin(broken, tmp_path, Clock())
    assert cut.score("a", rows, answered(model, rows)) == "error"
    assert cut.score("b", rows, answered(model, rows)) == "paused"
    assert not (tmp_path / shadow.CHAMPION).exists()


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 2000)])
def test_the_rate_is_the_share_of_requests_shadowed(
    models: tuple[scoring.ServedModel, scoring.ServedModel], rate: float, expected: int
) -> None:
    cut = shadow.Shadow(models[1], rate, BUDGET, CircuitBreaker(1, 1.0), logs=(None, None))  # type: ignore[arg-type]
    assert sum(cut.sampled() for _ in range(2000)) == expected


def test_a_share_is_sampled_at_about_its_rate(
    models: tuple[scoring.ServedModel, scoring.ServedModel],
) -> None:
    cut = shadow.Shadow(models[1], 0.1, BUDGET, CircuitBreaker(1, 1.0), logs=(None, None))  # type: ignore[arg-type]
    drawn = sum(cut.sampled() for _ in range(20_000))
    assert abs(drawn / 20_000 - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 20_000)  # 5 standard errors


def test_work_after_the_response_needs_a_request() -> None:
    assert http.after_response(lambda: None) is False
