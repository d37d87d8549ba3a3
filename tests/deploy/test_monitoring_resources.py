"""deploy/monitoring renders with `kubectl kustomize` and points at the model's Service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.manifests import DEPLOY, MODEL, OVERLAYS, one, render


@pytest.fixture(scope="module")
def monitoring() -> list[dict[str, Any]]:
    return render(DEPLOY / "monitoring")


def test_it_renders_a_rule_a_servicemonitor_and_a_dashboard(monitoring):
    assert sorted(r["kind"] for r in monitoring) == [
        "ConfigMap",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    assert {r["metadata"]["namespace"] for r in monitoring} == {"monitoring"}
    for kind in ("PrometheusRule", "ServiceMonitor"):
        # kube-prometheus-stack selects both by its Helm release's name
        assert one(monitoring, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_configmap_holds_the_dashboard_for_grafanas_sidecar(monitoring):
    config_map = one(monitoring, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["name"] == f"{MODEL}-dashboard"  # no hash suffix: a stable name
    (document,) = config_map["data"].values()
    assert json.loads(document) == json.loads(
        (DEPLOY / "monitoring" / "dashboard.json").read_text()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_servicemonitor_scrapes_metrics_of_each_overlays_service(monitoring, overlay):
    monitor = one(monitoring, "ServiceMonitor")["spec"]
    service = one(render(DEPLOY / "overlays" / overlay), "Service")
    selector = monitor["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"] == {"any": True}
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def test_the_overlays_do_not_need_the_operators_crds():
    for overlay in OVERLAYS:
        kinds = {r["kind"] for r in render(DEPLOY / "overlays" / overlay)}
        assert not kinds & {"PrometheusRule", "ServiceMonitor"}
