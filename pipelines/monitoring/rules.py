"""Prometheus rules, alerts and manifests of the served model, generated from ``params.yaml``.

``make monitoring`` writes ``deploy/monitoring/`` from ``monitor:``, ``alerting:`` and
``register.model_name``: ``rules.yml`` (a plain Prometheus rule file), ``alertmanager.yml``
(its routing, :mod:`pipelines.monitoring.alertmanager`), ``prometheusrule.yaml`` and
``servicemonitor.yaml`` (kube-prometheus-stack), ``dashboard.json`` (Grafana) and the
``kustomization.yaml`` that packs the dashboard into a ConfigMap for Grafana's sidecar.
Nothing else writes those files.

Drift is the batch report's verdict (``pipelines.core.drift``) in PromQL, per namespace,
model version and feature, over the served rows of ``monitor.window`` (``N``) against the
reference profile's ``M`` rows: a feature drifts when its PSI exceeds
``max(psi_floor, (1/N + 1/M) * chi2_quantile(1 - alpha, df))`` with ``df`` the reference bins
that hold rows, minus one, ``alpha = false_alarm_rate / (features + 1)`` and ``N >= min_rows``,
for ``alert_after``. A multiclass model's predicted class is a third subject (the share of rows
predicted as each class), so its ``alpha`` is split over ``features + 2`` tests. A window without
drift crosses some feature's (or the score's, or the predicted class's) chi-square
part with probability ``false_alarm_rate`` (approximately: PSI is computed on counts smoothed by
half a row per bin, ``drift.psi_of_counts``, and bins are merged until each expects ten rows, so
that its chi-square law holds at ``min_rows`` too); the floor only lowers that rate. The SLO
alerts are the multiwindow, multi-burn-rate alerts of the Google SRE workbook (chapter 5).

Usage: ``python -m pipelines.monitoring.rules --params PARAMS --out DIR``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pipelines.core.drift import EPSILON, SMOOTHING, per_test_rate
from pipelines.core.io import PipelineError, run_stage
from pipelines.core.metrics import Task
from pipelines.monitoring import alertmanager
from pipelines.monitoring.dashboard import dashboard
from pipelines.monitoring.decisions import decision_rules, gap_alerts
from pipelines.monitoring.kustomize import (
    KUSTOMIZATION_HEADER,
    dump,
    kustomization,
    prometheus_rule,
    service_monitor,
    write_files,
)
from pipelines.params import (
    AlertingParams,
    FairnessParams,
    MonitorParams,
    RegisterParams,
    load_optional,
    load_paths,
    load_section,
)
from pipelines.schema import load_schema
from pipelines.serving import names

# Labels the rules keep: Prometheus adds `namespace` to what a ServiceMonitor scrapes, which keeps
# staging and production apart; without it (a plain scrape config) the label is simply absent.
SERVICE = ("namespace", "model")
VERSION = (*SERVICE, "model_version")
# (burn rate, long window, short window, severity): the SRE workbook's page and ticket pairs
BURN_RATES = ((14.4, "1h", "5m", "page"), (6.0, "6h", "30m", "ticket"))
BURN_FOR = "2m"
NO_TRAFFIC = "10m"  # no request this long, while the service has been up as long: an alert
VERSION_NEW = "30m"  # a model version absent this long ago is new
FALLBACK_WINDOW = "5m"  # answers by a fallback over this long, lasting as long: an alert
QUANTILES = (0.5, 0.99)


@dataclass(frozen=True)
class Subject:
    """What drift is measured on: every feature, the score, or a multiclass model's class."""

    name: str  # "feature", "score" or "predicted_class": the recording rules' infix
    served: str  # counter of served values per bin
    reference: str  # gauge of the reference fraction per bin
    reference_rows: str  # gauge of the reference's row count M
    keys: tuple[str, ...]  # one PSI per these labels
    positions: int  # ordered value bins at most (KS)
    numeric: str  # matcher of the reference bins that have an order


def subjects(params: MonitorParams, task: Task = "binary") -> tuple[Subject, ...]:
    """The features, the score and (multiclass) the predicted class, with their metric names."""
    feature = Subject(
        "feature",
        names.FEATURE_BIN,
        names.REFERENCE_FEATURE_FRACTION,
        names.REFERENCE_FEATURE_ROWS,
        (*VERSION, "feature"),
        params.bins,
        ', kind="numeric"',
    )
    score = Subject(
        "score",
        names.SCORE_BIN,
        names.REFERENCE_SCORE_FRACTION,
        names.REFERENCE_SCORE_ROWS,
        VERSION,
        params.score_bins,
        "",
    )
    if task != "multiclass":
        return feature, score
    predicted = Subject(
        "predicted_class",
        names.CLASS_BIN,
        names.REFERENCE_CLASS_FRACTION,
        names.REFERENCE_CLASS_ROWS,
        VERSION,
        0,  # classes have no order: PSI only
        "",
    )
    return feature, score, predicted


def outputs(task: Task) -> int:
    """The subjects watched of the model's output, beside the features (the Bonferroni split)."""
    return 2 if task == "multiclass" else 1


def by(*labels: str) -> str:
    """A ``by``/``on`` label list."""
    return "(" + ", ".join(labels) + ")"


def selector(model: str, extra: str = "") -> str:
    """The matchers that pin a query to ``model``."""
    return "{model=" + json.dumps(model) + extra + "}"


def go_float(value: float) -> str:
    """``value`` as Go's ``FormatFloat(v, 'g', -1, 64)`` writes it (Prometheus 3's ``le``)."""
    text = repr(float(value))
    return text.removesuffix(".0") if "e" not in text else text


def le_matcher(seconds: float) -> str:
    """The ``le`` matcher of a bucket, as prometheus_client ("1.0") or Prometheus 3 ("1") say."""
    spellings = sorted({repr(float(seconds)), go_float(seconds)})
    if len(spellings) == 1:
        return f'le="{spellings[0]}"'
    return 'le=~"' + "|".join(s.replace(".", "\\\\.") for s in spellings) + '"'


def check_latency(seconds: float) -> None:
    """Refuse an SLO latency that is not a bucket bound of the duration histogram.

    Raises:
        PipelineError: The share of faster requests cannot be read off the histogram.
    """
    if float(seconds) not in names.DURATION_BUCKETS:
        bounds = ", ".join(f"{b:g}" for b in names.DURATION_BUCKETS)
        raise PipelineError(
            f"monitor.slo.latency {seconds:g} s is not a bucket of {names.REQUEST_DURATION}: "
            f"use one of {bounds} (the share of slower requests is read off that bucket)"
        )


def record(name: str, expr: str) -> dict[str, Any]:
    """A recording rule."""
    return {"record": name, "expr": expr}


def drift_rules(
    subject: Subject, params: MonitorParams, model: str, features: int, task: Task = "binary"
) -> list[dict[str, Any]]:
    """Recording rules of one subject's PSI, threshold and KS distance over ``monitor.window``.

    Served fractions ``q`` cover every reference bin (0 where nothing was served), so PSI and
    the cumulative sums see the same bins as ``drift.psi_of_counts`` and ``drift.ks``; versions
    without served rows get no PSI. As in ``drift.psi_of_counts``, PSI compares the smoothed
    fractions (``SMOOTHING`` rows added to each bin the reference holds rows in, on the served
    counts and on the reference's fractions times its rows), both floored at ``EPSILON`` in the
    difference as well as in the logarithm.
    """
    w, s, keys = params.window, subject.name, subject.keys
    cells = (*keys, "bin")
    counts, rows = f"model:{s}_bin_served:increase{w}", f"model:{s}_rows_served:increase{w}"
    q, p = f"model:{s}_bin_served:fraction{w}", f"model:{s}_bin_reference:fraction"
    m, df = f"model:{s}_rows_reference:max", f"model:{s}_bins_reference:df"
    held = f"model:{s}_bins_reference:held"
    qs, ps = f"model:{s}_bin_served:smoothed{w}", f"model:{s}_bin_reference:smoothed"
    alpha = per_test_rate(params.false_alarm_rate, features, outputs(task))
    z = NormalDist().inv_cdf(1.0 - alpha)
    rules = [
        record(counts, f"sum by {by(*cells)} (increase({subject.served}{selector(model)}[{w}]))"),
        record(rows, f"sum by {by(*keys)} ({counts})"),
        record(p, f"max by {by(*cells)} ({subject.reference}{selector(model)})"),
        record(m, f"max by {by(*keys)} ({subject.reference_rows}{selector(model)})"),
        record(held, f"count by {by(*keys)} ({p} > 0)"),
        record(df, f"clamp_min({held} - 1, 1)"),
        record(
            q,
            f"{counts} / on {by(*keys)} group_left () ({rows} > 0)\n"
            f"or on {by(*cells)}\n"
            f"0 * ({p} and on {by(*keys)} ({rows} > 0))",
        ),
        record(
            qs,
            f"(\n  ({counts} or on {by(*cells)} 0 * ({p} and on {by(*keys)} ({rows} > 0)))\n"
            f"  + on {by(*cells)} {SMOOTHING!r} * ({p} > bool 0)\n)\n"
            f"/ on {by(*keys)} group_left ()\n"
            f"(({rows} > 0) + on {by(*keys)} {SMOOTHING!r} * {held})",
        ),
        record(
            ps,
            f"(\n  {p} * on {by(*keys)} group_left () {m}\n"
            f"  + on {by(*cells)} {SMOOTHING!r} * ({p} > bool 0)\n)\n"
            f"/ on {by(*keys)} group_left ()\n"
            f"({m} + on {by(*keys)} {SMOOTHING!r} * {held})",
        ),
        record(
            f"model:{s}_psi:{w}",
            f"sum by {by(*keys)} (\n"
            f"  (clamp_min({qs}, {EPSILON}) - on {by(*cells)} clamp_min({ps}, {EPSILON}))\n"
            f"  * ln(clamp_min({qs}, {EPSILON}) / on {by(*cells)} clamp_min({ps}, {EPSILON}))\n"
            ")",
        ),
        # drift.psi_threshold, with Wilson and Hilferty's chi-square quantile (z is its normal
        # quantile at 1 - alpha, alpha the model's false-alarm rate over its features + outputs)
        record(
            f"model:{s}_psi_threshold:{w}",
            "clamp_min(\n"
            f"  (1 / {rows} + 1 / {m})\n"
            f"  * ({df} * (1 - 2 / (9 * {df}) + {z!r} * sqrt(2 / (9 * {df}))) ^ 3),\n"
            f"  {params.psi_floor!r}\n"
            ")",
        ),
    ]
    # KS: the cumulative fractions up to each ordered bin i, one rule per position, labelled
    # bin="i" (a static label, so each rule writes its own series); a feature with fewer bins
    # repeats its last cumulative value, which changes no max. Unordered bins get no KS.
    if not subject.positions:
        return rules
    for i in range(subject.positions):
        upto = f'bin=~"{"|".join(str(j) for j in range(i + 1))}"'
        served = f"sum by {by(*keys)} ({q}{{{upto}}})"
        # the raw gauge, for its kind label: one copy per pod, hence max before sum
        ordered = selector(model, subject.numeric + ", " + upto)
        reference = f"sum by {by(*keys)} (max by {by(*cells)} ({subject.reference}{ordered}))"
        for name, expr in (
            (f"model:{s}_cdf_served:fraction{w}", served),
            (f"model:{s}_cdf_reference:fraction", reference),
        ):
            rules.append(record(name, expr) | {"labels": {"bin": str(i)}})
    rules.append(
        record(
            f"model:{s}_ks:{w}",
            f"max by {by(*keys)} (abs(model:{s}_cdf_served:fraction{w}"
            f" - on {by(*cells)} model:{s}_cdf_reference:fraction))",
        )
    )
    return rules


def burn_windows() -> list[str]:
    """Every window a burn-rate alert reads, shortest first."""
    seconds = {"m": 60, "h": 3600}
    windows = {w for _, long, short, _ in BURN_RATES for w in (long, short)}
    return sorted(windows, key=lambda w: int(w[:-1]) * seconds[w[-1]])


def slo_rules(params: MonitorParams, model: str) -> list[dict[str, Any]]:
    """Recording rules of traffic, error ratio, slow-request ratio and latency quantiles.

    Raises:
        PipelineError: ``monitor.slo.latency`` is not a bucket of the duration histogram.
    """
    check_latency(params.slo.latency)
    failed = ', outcome=~"' + "|".join(names.FAILED_OUTCOMES) + '"'
    requests, duration = names.REQUESTS, names.REQUEST_DURATION
    rules = [
        record(
            "model:requests:rate5m",
            f"sum by {by(*SERVICE, 'endpoint', 'outcome')} (rate({requests}{selector(model)}[5m]))",
        )
    ]
    for w in burn_windows():
        total = f"sum by {by(*SERVICE)} (rate({requests}{selector(model)}[{w}]))"
        errors = f"sum by {by(*SERVICE)} (rate({requests}{selector(model, failed)}[{w}]))"
        # no failed request yet means no series: a ratio of 0, not none
        rules.append(
            record(f"model:request_errors:ratio_rate{w}", f"({errors} or 0 * {total})\n/ {total}")
        )
    fast = selector(model, ", " + le_matcher(params.slo.latency))
    for w in burn_windows():
        within = f"sum by {by(*SERVICE)} (rate({duration}_bucket{fast}[{w}]))"
        every = f"sum by {by(*SERVICE)} (rate({duration}_count{selector(model)}[{w}]))"
        rules.append(record(f"model:request_slow:ratio_rate{w}", f"1 - {within}\n/ {every}"))
    buckets = (
        f"sum by {by(*SERVICE, 'endpoint', 'le')} (rate({duration}_bucket{selector(model)}[5m]))"
    )
    for quantile in QUANTILES:
        name = f"model:request_duration_seconds:p{quantile * 100:g}_rate5m"
        rules.append(record(name, f"histogram_quantile({quantile}, {buckets})"))
    return rules


def alert(
    name: str, expr: str, severity: str, summary: str, description: str, *, wait: str = "0s"
) -> dict[str, Any]:
    """An alerting rule."""
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if wait != "0s":
        rule["for"] = wait
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def lookup(rule: str, keys: tuple[str, ...], form: str = "%.3f") -> str:
    """An alert template that prints ``rule``'s value for the alert's own ``keys`` labels."""
    matchers = ",".join(f"{key}=%q" for key in keys)
    labels = " ".join(f"$labels.{key}" for key in keys)
    return (
        f'{{{{ with printf "{rule}{{{matchers}}}" {labels} | query }}}}'
        f'{{{{ . | first | value | printf "{form}" }}}}{{{{ end }}}}'
    )


ALERTS = {  # subject: (alert name, what drifted)
    "feature": ("ModelFeatureDrift", "feature {{ $labels.feature }}"),
    "score": ("ModelScoreDrift", "the score"),
    "predicted_class": ("ModelPredictedClassDrift", "the predicted class shares"),
}


def drift_alerts(
    params: MonitorParams, features: int, task: Task = "binary"
) -> list[dict[str, Any]]:
    """Feature, score and class drift: PSI above its threshold on enough rows, for a while."""
    w = params.window
    alpha = per_test_rate(params.false_alarm_rate, features, outputs(task))
    watched = "the score or the predicted class" if task == "multiclass" else "the score"
    rule = (
        f"PSI over {w} > max({params.psi_floor:g}, (1/N + 1/M) * chi2_quantile("
        f"{1 - alpha:.6g}, reference bins - 1)) with N >= {params.min_rows} served rows, for "
        f"{params.alert_after}; a window without drift crosses it on some feature or {watched} "
        f"with probability about {params.false_alarm_rate:g} (the floor only lowers it)."
    )
    alerts = []
    for subject in subjects(params, task):
        s, keys = subject.name, subject.keys
        name, what = ALERTS[s]
        expr = (
            f"model:{s}_psi:{w} > model:{s}_psi_threshold:{w}\n"
            f"and model:{s}_rows_served:increase{w} >= {params.min_rows}"
        )
        rows = lookup(f"model:{s}_rows_served:increase{w}", keys, "%.0f")
        threshold = lookup(f"model:{s}_psi_threshold:{w}", keys)
        summary = (
            f"{{{{ $labels.model }}}} {{{{ $labels.model_version }}}}: {what} drifted "
            f'(PSI {{{{ $value | printf "%.3f" }}}} > {threshold})'
        )
        description = (
            f"{what.capitalize()} of {{{{ $labels.model }}}} version "
            "{{ $labels.model_version }}"
            f" in namespace {{{{ $labels.namespace }}}} has PSI "
            f'{{{{ $value | printf "%.3f" }}}} over the last {w} ({rows} served rows) against '
            f"the training reference, above its threshold {threshold}. Drift rule: {rule} "
            "Compare with `make monitor` on the request log; retrain if it persists."
        )
        fires = alert(name, expr, "ticket", summary, description, wait=params.alert_after)
        # the numbers on their own, for receivers that read them (webhooks, chat templates)
        fires["annotations"] |= {
            "psi": '{{ $value | printf "%.3f" }}',
            "threshold": threshold,
            "rows": rows,
        }
        alerts.append(fires)
    return alerts


def slo_alerts(params: MonitorParams) -> list[dict[str, Any]]:
    """Error-ratio and latency burn-rate alerts over a long and a short window each."""
    slos = (
        (
            "ModelErrorBudgetBurn",
            "request_errors",
            1 - params.slo.availability,
            f"answered with {', '.join(names.FAILED_OUTCOMES)} (5xx, 429, 504)",
        ),
        (
            "ModelLatencyBudgetBurn",
            "request_slow",
            1 - params.slo.latency_target,
            f"slower than {params.slo.latency:g} s",
        ),
    )
    alerts = []
    for name, ratio, budget, what in slos:
        for rate, long, short, severity in BURN_RATES:
            limit = f"{rate * budget:.6g}"
            expr = (
                f"model:{ratio}:ratio_rate{long} > {limit}\n"
                f"and model:{ratio}:ratio_rate{short} > {limit}"
            )
            summary = (
                f"{{{{ $labels.model }}}}: the error budget burns {rate:g}x too fast "
                f"over {long} and {short}"
            )
            description = (
                f"{{{{ $value | humanizePercentage }}}} of the requests to {{{{ $labels.model }}}} "
                f"in namespace {{{{ $labels.namespace }}}} over the last {long} were {what}, and "
                f"more than {limit} over the last {short}: {rate:g} times the budget of "
                f"{budget:.3g}. At this rate the 30-day budget lasts {30 / rate:.3g} days."
            )
            alerts.append(alert(name, expr, severity, summary, description, wait=BURN_FOR))
    return alerts


def service_alerts(model: str) -> list[dict[str, Any]]:
    """No traffic while the service is up, its metrics missing, and a new model version."""
    info, requests = f"{names.INFO}{selector(model)}", f"{names.REQUESTS}{selector(model)}"
    service, version = by(*SERVICE), by(*VERSION)
    no_traffic = (
        f"(max by {service} ({info})\nand on {service}"
        f" max by {service} ({info} offset {NO_TRAFFIC}))"
        f"\nunless on {service}"
        f"\n(sum by {service} (increase({requests}[{NO_TRAFFIC}])) > 0)"
    )
    new_version = (
        f"(max by {version} ({info}) unless on {version} max by {version} ({info} offset "
        f"{VERSION_NEW}))\nand on {service} max by {service} ({info} offset {VERSION_NEW})"
    )
    return [
        alert(
            "ModelNoTraffic",
            no_traffic,
            "ticket",
            f"{{{{ $labels.model }}}}: no requests for {NO_TRAFFIC}",
            f"{{{{ $labels.model }}}} in namespace {{{{ $labels.namespace }}}} has been up for "
            f"{NO_TRAFFIC} (Prometheus scrapes it) and answered no request in that time: check "
            "the ingress, the Service and the clients.",
        ),
        alert(
            "ModelMetricsAbsent",
            f"absent({info})",
            "page",
            f"{{{{ $labels.model }}}}: no metrics for {NO_TRAFFIC}",
            f"Prometheus has no {names.INFO} of {{{{ $labels.model }}}}: the service is down "
            "or not scraped (ServiceMonitor, NetworkPolicy), and no other alert of the model "
            "can fire.",
            wait=NO_TRAFFIC,
        ),
        alert(
            "ModelVersionChanged",
            new_version,
            "info",
            "{{ $labels.model }}: version {{ $labels.model_version }} is serving",
            "{{ $labels.model }} in namespace {{ $labels.namespace }} serves model version "
            f"{{{{ $labels.model_version }}}}, which it did not serve {VERSION_NEW} ago. Drift "
            "is measured per version; a regression after this point is a `git revert` away.",
        ),
    ]


def fallback_alerts(model: str) -> list[dict[str, Any]]:
    """Requests answered by a fallback for a while; a fallback that could not be loaded."""
    service = by(*SERVICE)
    fallbacks = f"{names.FALLBACKS}{selector(model)}"
    expr = f"sum by {service} (rate({fallbacks}[{FALLBACK_WINDOW}])) > 0"
    return [
        alert(
            "ModelAnsweringFromFallback",
            expr,
            "ticket",
            f"{{{{ $labels.model }}}}: answers from its fallbacks for {FALLBACK_WINDOW}",
            f"{{{{ $labels.model }}}} in namespace {{{{ $labels.namespace }}}} has answered "
            '{{ $value | printf "%.2f" }} requests per second from its baseline or prior '
            f"(X-Model-Fallback) for {FALLBACK_WINDOW}: the model raises or misses "
            "serve.deadline_ms. Circuit breaker of a pod (2 open, 1 half-open, 0 closed): "
            + lookup(names.BREAKER_STATE, SERVICE, "%.0f")
            + f". {names.FALLBACKS} says why (reason) and what answered (used); the pods' "
            "logs hold the model's exceptions. Answers stay valid but worse: roll back "
            "(`git revert`) if it lasts.",
            wait=FALLBACK_WINDOW,
        ),
        alert(
            "ModelFallbackUnavailable",
            f"max by {by(*SERVICE, 'link')} ({names.FALLBACK_UNAVAILABLE}{selector(model)}) > 0",
            # a ticket, not info (which notifies no one): answers are fine until the model
            # fails, and then the safety net is not there
            "ticket",
            "{{ $labels.model }}: its fallback {{ $labels.link }} could not be loaded",
            "{{ $labels.model }} in namespace {{ $labels.namespace }} serves without its "
            "{{ $labels.link }}: a pod could not load it when it started, so a failure of the "
            "model falls back on the next link, or answers 503 when none is left. The pod's log "
            "names the files and the error (a missing or broken file): rebuild the image from "
            "a whole model, or retrain, to get it back.",
            wait=FALLBACK_WINDOW,
        ),
    ]


def rule_groups(
    params: MonitorParams,
    model: str,
    features: int,
    task: Task = "binary",
    *,
    fairness: FairnessParams | None = None,
    positive: Any = None,
) -> dict[str, Any]:
    """The whole rule file, for a model of ``features`` features and ``task``.

    Rules of a group run in order at each evaluation, so an alert placed after the recording
    rules it reads sees this evaluation's values, not the previous one's.
    """
    drift = [
        rule
        for subject in subjects(params, task)
        for rule in drift_rules(subject, params, model, features, task)
    ]
    alerts = drift_alerts(params, features, task)
    return {
        "groups": [
            {"name": f"{model}-drift", "rules": [*drift, *alerts]},
            {"name": f"{model}-slo", "rules": [*slo_rules(params, model), *slo_alerts(params)]},
            {
                "name": f"{model}-service",
                "rules": [*service_alerts(model), *fallback_alerts(model)],
            },
            *(
                [
                    {
                        "name": f"{model}-decisions",
                        "rules": [*decided, *gap_alerts(params, fairness, task)],
                    }
                ]
                if (decided := decision_rules(params, model, task, positive))
                else []
            ),
        ]
    }


def render(
    params: MonitorParams,
    model: str,
    features: int,
    task: Task = "binary",
    alerting: AlertingParams | None = None,
    *,
    fairness: FairnessParams | None = None,
    positive: Any = None,
) -> dict[str, str]:
    """Every file of deploy/monitoring, by name (``alertmanager.yml`` given ``alerting``).

    Raises:
        PipelineError: ``monitor.slo.latency`` is not a bucket of the duration histogram.
    """
    groups = rule_groups(params, model, features, task, fairness=fairness, positive=positive)
    routing = {} if alerting is None else {"alertmanager.yml": alertmanager.render(alerting, model)}
    return {
        **routing,
        "rules.yml": dump(groups),
        "prometheusrule.yaml": dump(prometheus_rule(groups, model)),
        "servicemonitor.yaml": dump(service_monitor(model)),
        "dashboard.json": json.dumps(dashboard(params, model, task), indent=2) + "\n",
        "kustomization.yaml": dump(kustomization(model), KUSTOMIZATION_HEADER),
    }


def main(argv: list[str] | None = None) -> int:
    """Write deploy/monitoring from params.yaml; with --check, fail if it differs instead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="PATH")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    params = load_section("monitor", MonitorParams, args.params)
    model = load_section("register", RegisterParams, args.params).model_name
    schema = load_schema(load_paths(args.params).schema_)
    alerting = load_section("alerting", AlertingParams, args.params)
    fairness = load_optional("fairness", FairnessParams, args.params)
    target = schema.target
    files = render(
        params,
        model,
        len(schema.features),
        target.task,
        alerting,
        fairness=fairness,
        positive=target.positive,
    )
    return write_files(files, args.out, args.params, check=args.check)


if __name__ == "__main__":
    run_stage(main)
