"""Each overlay renders, with real `kubectl kustomize`, to a hardened, probed, pinned service."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipelines.release.manifests import show_image
from tests.support.manifests import DEPLOY, MODEL, OVERLAYS, one, render

BENTOML_UID = 1034  # the `bentoml` user of BentoML's generated Dockerfile


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


def uses_canary(overlay: str) -> bool:
    """Whether the overlay lists the canary component."""
    kustomization = yaml.safe_load(
        (DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text()
    )
    return "../../components/canary" in kustomization.get("components", [])


def pod_spec(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return one(resources, "Deployment")["spec"]["template"]["spec"]


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = pod_spec(resources)["containers"]
    return only


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_every_resource_is_in_the_overlays_namespace(overlay):
    name, resources = overlay
    kinds = sorted(r["kind"] for r in resources)
    canary = ["AnalysisTemplate", "Rollout"] if uses_canary(name) else []
    assert kinds == sorted(
        [
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            *canary,
        ]
    )
    assert {r["metadata"]["namespace"] for r in resources} == {f"{MODEL}-{name}"}
    for resource in resources:
        if resource["kind"] == "AnalysisTemplate":
            continue  # named for what it analyses, and without labels: it runs no pods
        assert resource["metadata"]["name"] == f"{MODEL}-server"
        labels = resource["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == MODEL
        assert labels["app.kubernetes.io/part-of"] == MODEL


def test_the_image_is_the_overlays_by_digest(overlay):
    name, resources = overlay
    image = show_image(DEPLOY / "overlays" / name / "kustomization.yaml")
    assert container(resources)["image"] == str(image)
    assert "@sha256:" in container(resources)["image"]


def test_probes_wait_for_the_model_then_watch_it(overlay):
    _, resources = overlay
    server = container(resources)
    assert server["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    startup, live, ready = (server[p] for p in ("startupProbe", "livenessProbe", "readinessProbe"))
    assert startup["httpGet"] == {"path": "/livez", "port": "http"}
    assert live["httpGet"] == {"path": "/livez", "port": "http"}
    assert ready["httpGet"] == {"path": "/readyz", "port": "http"}
    # The port refuses connections while the model loads: minutes, not liveness's seconds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_pod_meets_the_restricted_pod_security_standard(overlay):
    _, resources = overlay
    pod = pod_spec(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == BENTOML_UID
    assert pod["securityContext"]["runAsGroup"] == BENTOML_UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(resources)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context.get("privileged", False) is False
    assert all(key not in pod for key in ("hostNetwork", "hostPID", "hostIPC"))


def test_only_tmp_bentoml_home_and_the_request_log_are_writable(overlay):
    _, resources = overlay
    pod, server = pod_spec(resources), container(resources)
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert mounts["/tmp"] in empty_dirs  # noqa: S108 (the pod's /tmp, not ours)
    assert mounts[env["BENTOML_HOME"]] in empty_dirs
    assert mounts[env["MODEL_REQUEST_LOG_DIR"]] in empty_dirs
    assert 0 < float(env["MODEL_REQUEST_LOG_RATE"]) <= 1  # on in the manifests
    assert set(mounts.values()) == empty_dirs
    assert not any(m.get("readOnly") for m in server["volumeMounts"])


def test_no_service_account_token(overlay):
    _, resources = overlay
    pod = pod_spec(resources)
    account = one(resources, "ServiceAccount")
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_resources_are_requested_and_limited(overlay):
    _, resources = overlay
    limits = container(resources)["resources"]
    for kind in ("requests", "limits"):
        assert set(limits[kind]) == {"cpu", "memory", "ephemeral-storage"}


def test_shutdown_lets_in_flight_requests_finish(overlay):
    _, resources = overlay
    pause = container(resources)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pause < pod_spec(resources)["terminationGracePeriodSeconds"]


def test_prometheus_scrapes_metrics_on_the_http_port(overlay):
    _, resources = overlay
    annotations = one(resources, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "3000"


def test_pods_spread_over_nodes(overlay):
    _, resources = overlay
    labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    spread = pod_spec(resources)["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}
    assert all(selects(c["labelSelector"]["matchLabels"], labels) for c in spread)


def test_service_budget_autoscaler_and_policy_select_the_pods(overlay):
    _, resources = overlay
    deployment = one(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)

    service = one(resources, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert selects(service["spec"]["selector"], labels)
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}
    ]

    budget = one(resources, "PodDisruptionBudget")
    assert selects(budget["spec"]["selector"]["matchLabels"], labels)

    autoscaler = one(resources, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    # A canary overlay's Rollout owns the pods (the Deployment is its template, scaled to zero)
    workload = (
        one(resources, "Rollout") if any(r["kind"] == "Rollout" for r in resources) else deployment
    )
    assert (target["apiVersion"], target["kind"]) == (workload["apiVersion"], workload["kind"])
    assert target["name"] == workload["metadata"]["name"] == deployment["metadata"]["name"]
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # The autoscaler owns the count: a replicas field would make Argo CD undo its scaling.
    assert "replicas" not in deployment["spec"]

    policy = one(resources, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == [3000]
    assert policy["egress"] == []


def test_production_runs_more_replicas_than_staging():
    staging, production = (
        one(render(DEPLOY / "overlays" / name), "HorizontalPodAutoscaler")["spec"]
        for name in ("staging", "production")
    )
    assert production["minReplicas"] >= 2
    assert production["minReplicas"] > staging["minReplicas"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_argo_cd_application_deploys_the_overlay(name):
    application = yaml.safe_load((DEPLOY / "argocd" / f"{name}.yaml").read_text())
    project = yaml.safe_load((DEPLOY / "argocd" / "project.yaml").read_text())
    spec = application["spec"]
    namespace = one(render(DEPLOY / "overlays" / name), "Deployment")["metadata"]["namespace"]
    assert spec["source"]["path"] == f"deploy/overlays/{name}"
    assert (DEPLOY / "overlays" / name / "kustomization.yaml").is_file()
    # staging from the branch the release writes (make deploy-staging), production from main
    assert spec["source"]["targetRevision"] == {"staging": "deploy/staging"}.get(name, "main")
    assert spec["destination"]["namespace"] == namespace
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
    assert spec["project"] == project["metadata"]["name"]
    assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
    allowed = {(d["server"], d["namespace"]) for d in project["spec"]["destinations"]}
    assert (spec["destination"]["server"], namespace) in allowed
    kinds = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for resource in render(DEPLOY / "overlays" / name):
        group = resource["apiVersion"].rpartition("/")[0]
        assert (group, resource["kind"]) in kinds
