"""The API key components: the key file from a Secret, or Envoy Gateway's key check in front.

Rendered in a copy of deploy/ whose staging overlay lists both components, as a team turns them
on; the gateway's resources are checked against the schemas kept in deploy/schemas.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from pipelines.serving import keys
from tests.support.manifests import DEPLOY, ROOT, edit, one, render

SCHEMAS = {"HTTPRoute": "httproute_v1.json", "SecurityPolicy": "securitypolicy_v1alpha1.json"}


@pytest.fixture(scope="module")
def turned_on(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    overlay = copy / "overlays" / "staging" / "kustomization.yaml"
    edit(
        overlay,
        "resources:\n  - ../../base\n",
        "resources:\n  - ../../base\n\ncomponents:\n  - ../../components/api-keys\n"
        "  - ../../components/gateway-auth\n",
    )
    return render(overlay.parent)


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0])


def test_the_overlays_as_committed_check_no_key() -> None:
    for overlay in ("staging", "production"):
        resources = render(DEPLOY / "overlays" / overlay)
        assert all(e["name"] != keys.ENVIRONMENT for e in container(resources)["env"])
        assert {r["kind"] for r in resources}.isdisjoint(SCHEMAS)


def test_the_key_file_comes_from_the_secret_the_pods_wait_for(
    turned_on: list[dict[str, Any]],
) -> None:
    server = container(turned_on)
    (path,) = [e["value"] for e in server["env"] if e["name"] == keys.ENVIRONMENT]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == "api-keys"]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a changed Secret reaches running pods: rotation, no restart
    assert Path(path).parent == Path(mount["mountPath"])
    pod = one(turned_on, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    secret = volume["secret"]
    assert secret["optional"] is False  # a missing Secret never starts an open service
    assert secret["items"] == [{"key": "api-keys", "path": Path(path).name}]
    assert secret["defaultMode"] & 0o007 == 0
    assert all(r["kind"] != "Secret" for r in turned_on)  # the keys are never in git


def test_the_gateway_routes_only_the_api_to_the_overlays_service_behind_its_key_check(
    turned_on: list[dict[str, Any]],
) -> None:
    route, policy = one(turned_on, "HTTPRoute"), one(turned_on, "SecurityPolicy")
    service = one(turned_on, "Service")["metadata"]
    namespace = service["namespace"]
    assert route["metadata"]["namespace"] == policy["metadata"]["namespace"] == namespace
    (rule,) = route["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    assert (backend["name"], backend["port"]) == (service["name"], 80)
    paths = {m["path"]["value"] for m in rule["matches"]}
    assert paths == {*keys.PROTECTED, "/docs.json"}  # no /metrics, no probes
    (target,) = policy["spec"]["targetRefs"]
    assert (target["kind"], target["name"]) == ("HTTPRoute", route["metadata"]["name"])
    assert policy["spec"]["apiKeyAuth"]["credentialRefs"][0]["kind"] == "Secret"
    sources = one(turned_on, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    gateways = [s for s in sources if "namespaceSelector" in s]
    assert any(
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        == route["spec"]["parentRefs"][0]["namespace"]
        for s in gateways
    )


def validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((DEPLOY / "schemas" / SCHEMAS[kind]).read_text()))


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_the_rendered_gateway_resources_match_their_schemas(
    turned_on: list[dict[str, Any]], kind: str
) -> None:
    assert [e.message for e in validator(kind).iter_errors(one(turned_on, kind))] == []


@pytest.mark.parametrize(
    ("kind", "path", "typo"),
    [
        ("HTTPRoute", ("spec", "rules", 0), "backendRef"),
        ("HTTPRoute", ("spec", "parentRefs", 0), "namspace"),
        ("SecurityPolicy", ("spec",), "apiKeyAuthentication"),
        ("SecurityPolicy", ("spec", "apiKeyAuth", "extractFrom", 0), "header"),
    ],
)
def test_the_schemas_reject_a_misspelt_field(
    turned_on: list[dict[str, Any]], kind: str, path: tuple[Any, ...], typo: str
) -> None:
    resource = json.loads(json.dumps(one(turned_on, kind)))
    place = resource
    for key in path:
        place = place[key]
    place[typo] = 1
    messages = " ".join(e.message for e in validator(kind).iter_errors(resource))
    assert f"'{typo}' was unexpected" in messages


def test_kubernetes_validate_accepts_the_overlay_with_both_components(
    turned_on: list[dict[str, Any]],
) -> None:
    """The Deployment and NetworkPolicy as the components patch them, against Kubernetes' own
    schemas at `make lint-deploy`'s version (the gateway's kinds have none there: see above)."""
    (version,) = re.findall(
        r"^KUBERNETES_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M
    )
    rendered = [r for r in turned_on if r["kind"] not in SCHEMAS]
    validate = str(Path(sys.executable).parent / "kubernetes-validate")
    done = subprocess.run(
        [validate, "--strict", "--quiet", "-k", version, "-"],
        input=yaml.safe_dump_all(rendered),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
