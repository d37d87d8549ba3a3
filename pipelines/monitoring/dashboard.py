"""The Grafana dashboard of the served model, generated with its Prometheus rules.

Traffic, errors by outcome, latency quantiles, the served score distribution against the
reference's, the features with the highest PSI and the model version, per namespace (staging,
production) and model version; for a multiclass model also the predicted-class shares against
the reference's and their PSI; for a classifier the expected value of its decisions per hour and
(binary) the selection rate of each group of the sensitive columns. Panels read the recording
rules of ``pipelines.monitoring.rules`` (the drift maths is written once, there) and
``model_info``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipelines.core.metrics import Task
from pipelines.params import MonitorParams
from pipelines.serving import names

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TOP = 10  # features in the PSI panel


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    query: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "refId": ref}
    if legend:
        query["legendFormat"] = legend
    if instant:
        query |= {"instant": True, "range": False, "format": "table"}
    return query


def panel(
    title: str,
    kind: str,
    targets: list[dict[str, Any]],
    place: tuple[int, int, int, int],
    unit: str = "short",
    **extra: Any,
) -> dict[str, Any]:
    """A panel at ``place`` = (x, y, width, height) on Grafana's 24-column grid."""
    x, y, w, h = place
    return {
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
        **extra,
    }


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A template variable filled from a label's values."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
    }


Place = tuple[int, int, int, int]


def shares(title: str, subject: str, w: str, version: str, place: Place) -> dict[str, Any]:
    """A bar chart of a subject's served fractions per bin (over ``w``) against the reference's."""
    return panel(
        title,
        "barchart",
        [
            target(
                f"sum by (bin) (model:{subject}_bin_served:fraction{w}{version})",
                ref="A",
                instant=True,
            ),
            target(
                f"sum by (bin) (model:{subject}_bin_reference:fraction{version})",
                ref="B",
                instant=True,
            ),
        ],
        place,
        "percentunit",
        options={"xField": "bin", "legend": {"showLegend": True, "displayMode": "list"}},
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value #A": "served", "Value #B": "reference"},
                },
            },
        ],
    )


def psi_panel(title: str, subject: str, w: str, version: str, place: Place) -> dict[str, Any]:
    """A subject's PSI over ``w``, over time, against its threshold."""
    return panel(
        title,
        "timeseries",
        [
            target(f"model:{subject}_psi:{w}{version}", "PSI", "A"),
            target(f"model:{subject}_psi_threshold:{w}{version}", "threshold", "B"),
        ],
        place,
    )


def dashboard(params: MonitorParams, model: str, task: Task = "binary") -> dict[str, Any]:
    """The dashboard's JSON model (Grafana 10+, loaded by the sidecar from a ConfigMap)."""
    pin = f'model="{model}", namespace="$namespace"'
    service, version = "{" + pin + "}", "{" + pin + ', model_version="$model_version"}'
    w = params.window
    requests = "model:requests:rate5m"
    panels = [
        panel(
            "Model version",
            "table",
            [
                target(
                    "max by (namespace, model_version, mlflow_version, git_commit) "
                    f"({names.INFO}{service})",
                    instant=True,
                )
            ],
            (0, 0, 24, 4),
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        ),
        panel(
            "Traffic",
            "timeseries",
            [target(f"sum by (endpoint) ({requests}{service})", "{{endpoint}}")],
            (0, 4, 12, 8),
            "reqps",
        ),
        panel(
            "Errors by outcome",
            "timeseries",
            [target(f'sum by (outcome) ({requests}{{{pin}, outcome!="ok"}})', "{{outcome}}")],
            (12, 4, 12, 8),
            "reqps",
        ),
        panel(
            "Latency p50 and p99",
            "timeseries",
            [
                target(
                    f"model:request_duration_seconds:p{q * 100:g}_rate5m{service}",
                    f"p{q * 100:g} {{{{endpoint}}}}",
                    ref,
                )
                for q, ref in zip((0.5, 0.99), "AB", strict=True)
            ],
            (0, 12, 12, 8),
            "s",
        ),
        panel(
            "Failed and slow requests (1h, against the SLO)",
            "timeseries",
            [
                target(f"model:request_errors:ratio_rate1h{service}", "failed", "A"),
                target(f"model:request_slow:ratio_rate1h{service}", "slow", "B"),
            ],
            (12, 12, 12, 8),
            "percentunit",
        ),
        shares(
            f"Score distribution against the reference ({w})", "score", w, version, (0, 20, 12, 9)
        ),
        psi_panel(f"Score PSI and its threshold ({w})", "score", w, version, (12, 20, 12, 9)),
        panel(
            f"Features with the highest PSI ({w})",
            "bargauge",
            [target(f"topk({TOP}, model:feature_psi:{w}{version})", "{{feature}}", instant=True)],
            (0, 29, 12, 10),
            options={"orientation": "horizontal", "displayMode": "basic"},
        ),
        panel(
            f"PSI over time, top {TOP // 2} features ({w})",
            "timeseries",
            [target(f"topk({TOP // 2}, model:feature_psi:{w}{version})", "{{feature}}")],
            (12, 29, 12, 10),
        ),
    ]
    if task == "multiclass":  # the predicted class's shares, below the features
        panels += [
            shares(
                f"Predicted class shares against the reference ({w})",
                "predicted_class",
                w,
                version,
                (0, 39, 12, 9),
            ),
            psi_panel(
                f"Predicted class PSI and its threshold ({w})",
                "predicted_class",
                w,
                version,
                (12, 39, 12, 9),
            ),
        ]
    if task != "regression":  # a classifier's decisions: their value, and (binary) by group
        panels.append(
            panel(
                "Expected value per hour (value model)",
                "timeseries",
                [target(f"model:expected_value:increase1h{service}", "{{model_version}}")],
                (0, 48, 12, 9),
            )
        )
    if task == "binary":
        panels.append(
            panel(
                f"Selection rate by group ({w})",
                "timeseries",
                [
                    target(
                        f'model:selection_rate:ratio{w}{{{pin}, column!=""}}',
                        "{{column}} = {{group}}",
                    )
                ],
                (12, 48, 12, 9),
                "percentunit",
            )
        )
    panels.append(
        panel(
            "Answers from fallbacks (by why, by what) and the circuit breaker",
            "timeseries",
            [
                target(
                    f"sum by (reason, used) (rate({names.FALLBACKS}{service}[5m]))",
                    "{{used}} ({{reason}})",
                    "A",
                ),
                target(
                    f"max({names.BREAKER_STATE}{service})",
                    "breaker: 2 open, 1 half-open, 0 closed",
                    "B",
                ),
            ],
            (0, 57, 24, 8),
        )
    )
    info = f'{names.INFO}{{model="{model}"}}'
    return {
        "uid": model[:40],
        "title": f"{model}: served model",
        "tags": ["model", model],
        "timezone": "utc",
        "schemaVersion": 39,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                variable("namespace", "Namespace", f"label_values({info}, namespace)"),
                variable(
                    "model_version",
                    "Model version",
                    f'label_values({names.INFO}{{model="{model}", namespace="$namespace"}}, '
                    "model_version)",
                ),
            ]
        },
        "panels": [{"id": i, **p} for i, p in enumerate(panels, start=1)],
    }


def queries(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard."""
    for item in document["panels"]:
        for query in item.get("targets", ()):
            yield item["title"], query["expr"]
