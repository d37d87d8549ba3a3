"""The drift verdict at its boundary and the expected quality against closed forms.

Mutations of the monitoring code tried, each with the fast test that catches it (each one that
no fast test caught got a test, here or beside the code it breaks):

- the batch report tests at the unsplit rate (``alpha = false_alarm_rate``):
    tests/monitoring/test_monitor.py::test_each_threshold_is_the_rule_at_the_models_split_rate
- drift requires twice the threshold (``psi > 2 * threshold``):
    test_a_window_drifts_above_its_threshold_and_not_below (here; at 0.7x and 1.3x)
- the holdout keeps the rows BASE's model trained on when only some are new:
    tests/review/test_holdout.py::test_rows_base_trained_on_are_left_out_and_all_of_them_is_no_holdout
- the card's intervals at half their confidence:
    tests/stages/test_card.py::test_each_tasks_interval_has_the_width_of_its_confidence
- expected false negatives from the wrong side (``(1 - p)`` of the unflagged rows):
    test_the_expected_confusion_matrix_is_the_closed_form (here)
- ``merged_edges`` never merges:
    tests/core/test_drift.py::test_merged_edges_merges_a_small_bin_into_its_smaller_neighbour
- the retraining decision ignores score drift (features only):
    tests/monitoring/test_retrain.py::test_drift_of_the_score_alone_calls_for_retraining
- the create-pull-request stand-in never updates an open pull request:
    tests/tools/test_standins.py::test_create_pull_request_updates_the_open_pull_request_of_its_branch
- upload-artifact silently overwrites an artifact of the same name:
    tests/tools/test_standins.py::test_an_artifact_of_the_same_name_is_refused_unless_overwrite
- PSI without smoothing (``SMOOTHING = 0``):
    tests/core/test_drift.py::test_smoothing_adds_half_a_row_to_the_bins_the_reference_holds_rows_in
    and ::test_the_models_false_alarm_rate_is_the_configured_one (2.3-3.2x at min_rows)
- the canary's measurements each at the whole rollout's rate:
    tests/monitoring/test_canary.py::test_a_healthy_canary_is_rolled_back_at_most_as_often_as_configured
- drift alerts not inhibited by a version change (a misspelt source alert):
    tests/monitoring/test_alertmanager.py::test_drift_alerts_are_inhibited_while_a_new_version_is_announced
- a quiet window fails the scheduled monitor:
    tests/monitoring/test_monitor.py::test_a_quiet_window_is_a_notice_and_a_green_decision_an_error_fails
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core import drift
from pipelines.core.drift import Binning
from pipelines.core.profile import Distribution
from pipelines.monitoring import quality
from pipelines.monitoring.compare import measure
from pipelines.params import MonitorParams, load_section
from tests.support.columns import PARAMS

MONITOR = load_section("monitor", MonitorParams, PARAMS)
REFERENCE = Distribution(
    Binning("categorical", categories=("a", "b")), (0.5, 0.5, 0.0, 0.0), 10_000
)
ROWS = 2_000


def window(share_of_a: float) -> list[str]:
    a = round(share_of_a * ROWS)
    return ["a"] * a + ["b"] * (ROWS - a)


def ratio(share_of_a: float, alpha: float) -> float:
    """PSI over threshold of a window with this share of "a", by the drift maths."""
    a = round(share_of_a * ROWS)
    value = drift.psi_of_counts([a, ROWS - a, 0, 0], REFERENCE.fractions, REFERENCE.rows)
    threshold = drift.psi_threshold(ROWS, REFERENCE.rows, 1, alpha, MONITOR.psi_floor)
    return value / threshold


@pytest.mark.parametrize("target", [0.7, 1.3])
def test_a_window_drifts_above_its_threshold_and_not_below(target: float) -> None:
    """Windows whose PSI is about 0.7 and 1.3 times the threshold: only the second drifts."""
    alpha = MONITOR.false_alarm_rate / 20
    share = min(np.arange(0.5, 0.7, 1 / ROWS), key=lambda s: abs(ratio(s, alpha) - target))
    found = measure("x", REFERENCE, window(share), MONITOR, alpha)
    assert found.ratio == pytest.approx(target, abs=0.02)
    assert found.drift is (target > 1)


def test_the_expected_confusion_matrix_is_the_closed_form() -> None:
    """Scores 0.9, 0.6 (flagged at 0.5) and 0.3, 0.1 (not), taken as calibrated."""
    e = quality.expected_quality(np.array([0.9, 0.6, 0.3, 0.1]), 0.5)
    assert (e["tp"], e["fp"], e["fn"], e["tn"]) == pytest.approx((1.5, 0.5, 0.4, 1.6))
    assert e["precision"] == pytest.approx(0.75)
    assert e["recall"] == pytest.approx(1.5 / 1.9)
    assert e["accuracy"] == pytest.approx(3.1 / 4)
    assert e["predicted_positive_rate"] == pytest.approx(0.5)


def test_the_expected_class_quality_is_the_closed_form() -> None:
    """Two rows: the expected accuracy is the mean top probability, class shares the means."""
    e = quality.expected_class_quality(
        np.array([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]]), ["x", "y", "z"]
    )
    assert e["accuracy"] == pytest.approx(0.65)
    assert e[f"{quality.SHARE}x"] == pytest.approx(0.45)
    assert e[f"{quality.PREDICTED_SHARE}z"] == pytest.approx(0.5)
