"""The names of the metric families the service exports, said once.

The service registers them under these names; the Prometheus rules and the Grafana dashboard
(``pipelines.monitoring.rules``) query them. Every series carries ``model`` and
``model_version``. Counters are listed by the name Prometheus stores (with ``_total``);
histograms by their family name (Prometheus stores ``_bucket``, ``_sum`` and ``_count``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Labels every series carries
MODEL = "model"
MODEL_VERSION = "model_version"

# Gauge, 1: model_version, mlflow_version, git_commit
INFO = "model_info"
# Counters of served values per reference bin: labels feature and bin; bin
FEATURE_BIN = "model_feature_bin_total"
SCORE_BIN = "model_score_bin_total"
# A multiclass model's served predicted classes per reference bin (one per class): bin
CLASS_BIN = "model_predicted_class_bin_total"
# Histogram of the monitored score, buckets score_buckets()
SCORE = "model_score"
# Gauges of the reference profile: fraction per bin (feature, bin, kind; bin) and rows M
REFERENCE_FEATURE_FRACTION = "model_reference_feature_fraction"
REFERENCE_SCORE_FRACTION = "model_reference_score_fraction"
REFERENCE_FEATURE_ROWS = "model_reference_feature_rows"
REFERENCE_SCORE_ROWS = "model_reference_score_rows"
REFERENCE_CLASS_FRACTION = "model_reference_predicted_class_fraction"
REFERENCE_CLASS_ROWS = "model_reference_predicted_class_rows"
# Counter of requests to /predict and /explain: endpoint, code, outcome (OUTCOMES), key (the
# API key's name in MODEL_API_KEYS_FILE, or KEY_NONE, KEY_UNKNOWN; "" with keys off)
REQUESTS = "model_requests_total"
# Histogram of those requests' durations in seconds, buckets DURATION_BUCKETS
REQUEST_DURATION = "model_request_duration_seconds"
# A classifier's served decisions: column, group (both empty: every row; else a sensitive
# column of fairness: and its group, OTHER_GROUP for one the test rows did not have), decision
DECISIONS = "model_decisions_total"
# The value model's expected value of those decisions: column, group, part (gain or loss, each
# counted positive: a counter cannot fall); value = gain - loss
EXPECTED_VALUE = "model_expected_value_total"
OTHER_GROUP = "other"
# The fallback chain (pipelines/serving/fallback.py): requests answered by a fallback, by reason
# (FALLBACK_REASONS) and used (FALLBACK_USED); the model's failures, by reason (FAILURE_REASONS);
# the circuit breaker's state (gauge: 0 closed, 1 half-open, 2 open) and its transitions by state;
# the fallbacks that could not be loaded (gauge, link: one of FALLBACK_USED; 1 when missing)
FALLBACKS = "model_fallback_total"
PRIMARY_FAILURES = "model_primary_failures_total"
BREAKER_STATE = "model_circuit_breaker_state"
BREAKER_TRANSITIONS = "model_circuit_breaker_transitions_total"
FALLBACK_UNAVAILABLE = "model_fallback_unavailable"
FAILURE_REASONS = ("error", "deadline")
FALLBACK_REASONS = ("error", "circuit_open")
FALLBACK_USED = ("baseline", "prior")
BREAKER_STATES = ("closed", "half_open", "open")

# Shadow scoring (pipelines/serving/shadow.py), only while a challenger is set: its scoring
# calls by outcome (SHADOW_OUTCOMES), labelled with the challenger's version too
SHADOW = "model_shadow_total"
SHADOW_OUTCOMES = ("scored", "late", "error", "paused")
CHALLENGER_VERSION = "challenger_version"
SHADOW_FAMILIES = (SHADOW,)

FAMILIES = (
    INFO,
    FEATURE_BIN,
    SCORE_BIN,
    CLASS_BIN,
    SCORE,
    REFERENCE_FEATURE_FRACTION,
    REFERENCE_SCORE_FRACTION,
    REFERENCE_FEATURE_ROWS,
    REFERENCE_SCORE_ROWS,
    REFERENCE_CLASS_FRACTION,
    REFERENCE_CLASS_ROWS,
    REQUESTS,
    REQUEST_DURATION,
    DECISIONS,
    EXPECTED_VALUE,
    FALLBACKS,
    PRIMARY_FAILURES,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    FALLBACK_UNAVAILABLE,
)
HISTOGRAMS = (SCORE, REQUEST_DURATION)
# The families only a multiclass model exports (its profile holds predicted-class shares)
CLASS_FAMILIES = (CLASS_BIN, REFERENCE_CLASS_FRACTION, REFERENCE_CLASS_ROWS)
# The families only a classifier exports, the second only with a value model
DECISION_FAMILIES = (DECISIONS, EXPECTED_VALUE)

# outcome label values of REQUESTS, by status code: ok 2xx, invalid 400 and other 4xx,
# unauthorized 401, too_large 413, unsupported_type 415, overloaded 429, timeout 504, error other
# 5xx
OUTCOMES = (
    "ok",
    "invalid",
    "unauthorized",
    "too_large",
    "unsupported_type",
    "overloaded",
    "timeout",
    "error",
)
# key label values of REQUESTS besides the key file's names
KEY_NONE = "none"  # no Bearer key sent
KEY_UNKNOWN = "unknown"  # a key not in the file, or a malformed one
KEY_UNNAMED = "unnamed"  # a valid key whose line names none
# The outcomes that spend the availability SLO's error budget (the service's fault or capacity)
FAILED_OUTCOMES = ("overloaded", "timeout", "error")

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


def score_buckets(edges: Sequence[float]) -> tuple[float, ...]:
    """The score histogram's buckets.

    A probability's fixed twentieths; for a score beyond [0, 1] (a regression's prediction) the
    reference profile's bin edges.
    """
    if all(0.0 <= edge <= 1.0 for edge in edges):
        return SCORE_BUCKETS
    return tuple(sorted(set(float(edge) for edge in edges)))


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# BentoML's own families, which stay beside the model's
BENTOML_FAMILIES = ("bentoml_service_request_total", "bentoml_service_request_duration_seconds")
