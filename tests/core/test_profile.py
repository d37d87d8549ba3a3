"""The reference profile of small inline tables: edges, fractions, rows, refusals, JSON form."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core.io import PipelineError, write_json
from pipelines.core.profile import Distribution, Profile, build_profile
from pipelines.schema import Schema


def make_schema(categories: tuple[str, ...] = ("a", "b", "c")) -> Schema:
    return Schema.model_validate(
        {
            "target": {"column": "y", "positive": "yes", "values": ["no", "yes"]},
            "id": "key",
            "rows": {"min": 1, "max": 100},
            "features": {
                "amount": {"type": "number", "min": 0, "max": 100, "max_null_fraction": 0.5},
                "flag": {"type": "integer", "min": 0, "max": 1},
                "kind": {"type": "category", "categories": list(categories)},
            },
        }
    )


ROWS = pd.DataFrame(
    {
        "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, math.nan, math.nan],
        "flag": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "kind": ["a", "a", "a", "b", "b", "c", None, "a", "b", "a"],
    }
)
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_edges_fractions_and_rows() -> None:
    profile = build_profile(ROWS, SCORES, make_schema(), bins=4, score_bins=2)

    amount = profile.features["amount"]
    assert amount.binning.kind == "numeric"
    assert amount.binning.edges == (2.0, 4.0, 6.0)  # quartiles of 1..8, "lower"
    assert amount.fractions == pytest.approx((0.2, 0.2, 0.2, 0.2, 0.2))  # 2 missing of 10
    assert amount.rows == 10

    flag = profile.features["flag"]
    assert flag.binning.edges == (0.0,)  # one zero in ten: still a bin of its own
    assert flag.fractions == pytest.approx((0.1, 0.9, 0.0))

    kind = profile.features["kind"]
    assert kind.binning.categories == ("a", "b", "c")
    assert kind.binning.labels == ["a", "b", "c", "(other)", "(missing)"]
    assert kind.fractions == pytest.approx((0.5, 0.3, 0.1, 0.0, 0.1))

    assert profile.score.binning.edges == (0.4,)
    assert profile.score.fractions == pytest.approx((0.5, 0.5, 0.0))
    assert profile.score.rows == len(SCORES)
    for distribution in [*profile.features.values(), profile.score]:
        assert sum(distribution.fractions) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["(other)", "(missing)"])
def test_a_category_named_like_a_profile_bin_is_refused(name: str) -> None:
    rows = ROWS.assign(kind=["a", name] * 5)
    expected = re.escape(f"feature 'kind' has a category named '{name}'")
    with pytest.raises(PipelineError, match=expected):
        build_profile(rows, SCORES, make_schema(("a", name)), bins=4, score_bins=2)


def test_no_rows_or_no_scores_are_refused() -> None:
    with pytest.raises(PipelineError, match="needs training rows"):
        build_profile(ROWS.head(0), SCORES, make_schema(), bins=4, score_bins=2)
    with pytest.raises(PipelineError, match="needs the test rows' scores"):
        build_profile(ROWS, [], make_schema(), bins=4, score_bins=2)


def test_json_round_trip(tmp_path: Path) -> None:
    profile = build_profile(ROWS, SCORES, make_schema(), bins=4, score_bins=2)
    write_json(tmp_path / "reference.json", profile.to_json())

    again = Profile.read(tmp_path / "reference.json")

    assert again.features.keys() == profile.features.keys()
    for before, after in zip(
        [*profile.features.values(), profile.score],
        [*again.features.values(), again.score],
        strict=True,
    ):
        assert after.binning == before.binning
        assert after.rows == before.rows
        np.testing.assert_allclose(after.fractions, before.fractions, atol=1e-8)


def test_a_profile_of_another_format_or_shape_is_refused() -> None:
    document = build_profile(ROWS, SCORES, make_schema(), bins=4, score_bins=2).to_json()
    with pytest.raises(PipelineError, match="format 2 is not 1"):
        Profile.from_json({**document, "format": 2})
    broken = {**document["score"], "fractions": [1.0]}
    with pytest.raises(PipelineError, match="1 fractions for 3 bins"):
        Distribution.from_json(broken)


def make_task_schema(task: str) -> Schema:
    """The schema above with a multiclass target (classes ``mid``, ``low``, ``high``: not in
    alphabetical order) or a regression one."""
    target: dict[str, Any] = {"column": "y", "task": task}
    if task == "multiclass":
        target["classes"] = ["mid", "low", "high"]
    document = make_schema().model_dump(mode="json", exclude_none=True)
    return Schema.model_validate({**document, "target": target})


def test_a_multiclass_profile_holds_the_predicted_class_shares(tmp_path: Path) -> None:
    schema = make_task_schema("multiclass")
    classes = ["mid", "low", "high"]
    positions = np.array([1, 1, 1, 0, 1, 0, 1, 1])  # "high" never predicted: its share is 0
    profile = build_profile(ROWS, SCORES, schema, bins=4, score_bins=2, predicted=positions)

    shares = profile.predicted
    assert shares is not None
    assert shares.binning.categories == tuple(classes)
    predicted = pd.Series([classes[p] for p in positions])
    expected = predicted.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    assert shares.fractions == pytest.approx((*expected.to_list(), 0.0, 0.0))  # other, missing
    assert shares.rows == len(positions)

    write_json(tmp_path / "reference.json", profile.to_json())
    document = json.loads((tmp_path / "reference.json").read_text())
    assert document["predicted_class"]["categories"] == classes
    again = Profile.read(tmp_path / "reference.json")
    assert again.predicted == Distribution(
        shares.binning, tuple(round(f, 8) for f in shares.fractions), shares.rows
    )


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_other_tasks_profiles_have_no_predicted_class(task: str, tmp_path: Path) -> None:
    schema = make_schema() if task == "binary" else make_task_schema(task)
    profile = build_profile(ROWS, SCORES, schema, bins=4, score_bins=2)

    assert profile.predicted is None
    write_json(tmp_path / "reference.json", profile.to_json())
    document = json.loads((tmp_path / "reference.json").read_text())
    assert set(document) == {"format", "features", "score"}
    assert Profile.read(tmp_path / "reference.json").predicted is None
