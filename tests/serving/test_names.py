"""The score histogram's buckets fit the score: a probability's twentieths, a prediction's edges."""

from __future__ import annotations

from pipelines.serving import names


def test_a_probability_keeps_the_fixed_buckets_every_version_shares() -> None:
    edges = [0.03, 0.1, 0.25, 0.6, 0.97]
    assert names.score_buckets(edges) == names.SCORE_BUCKETS
    assert names.SCORE_BUCKETS[0] == 0.05
    assert names.SCORE_BUCKETS[-1] == 1.0
    assert len(names.SCORE_BUCKETS) == 20


def test_a_regressions_prediction_takes_the_reference_edges() -> None:
    edges = [3.2, 5.5, 5.5, 7.25, 11.0]
    assert names.score_buckets(edges) == (3.2, 5.5, 7.25, 11.0)
    assert names.score_buckets([-4.0, 0.5]) == (-4.0, 0.5)
