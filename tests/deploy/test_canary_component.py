"""The canary component: a Rollout of the base Deployment's pods, with the analysis it runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipelines.monitoring import canary
from pipelines.params import CanaryParams, ParamsError, load_section
from tests.support.manifests import DEPLOY, ROOT, one, render

PARAMS = load_section("canary", CanaryParams, ROOT / "params.yaml")


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(DEPLOY / "overlays" / "production")


def test_the_rollout_takes_the_deployments_pods_without_copying_them(production):
    deployment, rollout = one(production, "Deployment"), one(production, "Rollout")
    assert "template" not in rollout["spec"]  # the pod spec lives in deploy/base alone
    ref = rollout["spec"]["workloadRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert ref["name"] == rollout["metadata"]["name"] == deployment["metadata"]["name"]
    assert ref["scaleDown"] in {"progressively", "onsuccess"}
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]
    assert rollout["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert rollout["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    # The base's spread per ReplicaSet also holds for the Rollout's ReplicaSets
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert canary.HASH_LABEL.replace("_", "-") in spread["matchLabelKeys"]


def test_each_weight_is_followed_by_the_analysis_of_canary_against_stable(production):
    steps = one(production, "Rollout")["spec"]["strategy"]["canary"]["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    assert weights == list(PARAMS.weights)
    template = one(production, "AnalysisTemplate")
    for step, following in zip(steps[::2], steps[1::2], strict=True):
        assert "setWeight" in step
        analysis = following["analysis"]
        assert analysis["templates"] == [{"templateName": template["metadata"]["name"]}]
        hashes = {a["name"]: a["valueFrom"].get("podTemplateHashValue") for a in analysis["args"]}
        assert (hashes["canary-hash"], hashes["stable-hash"]) == ("Latest", "Stable")
        # every argument the template declares is passed
        assert {a["name"] for a in template["spec"]["args"]} == set(hashes)


def test_every_metric_guards_empty_and_nan_results(production):
    for metric in one(production, "AnalysisTemplate")["spec"]["metrics"]:
        for key in ("successCondition", "failureCondition"):
            assert metric[key].startswith("len(result) > 0 && !isNaN(result[0]) && ")
        assert metric["provider"]["prometheus"]["address"] == PARAMS.prometheus
        assert metric["count"] == PARAMS.count


def test_staging_keeps_a_plain_deployment():
    kinds = {r["kind"] for r in render(DEPLOY / "overlays" / "staging")}
    assert "Deployment" in kinds
    assert not kinds & {"Rollout", "AnalysisTemplate"}


def validator(kind: str) -> Draft202012Validator:
    schema = json.loads((DEPLOY / "schemas" / f"{kind.lower()}_v1alpha1.json").read_text())
    return Draft202012Validator(schema)


@pytest.mark.parametrize("kind", ["Rollout", "AnalysisTemplate"])
def test_the_rendered_resources_match_their_crd_schemas(production, kind):
    errors = [e.message for e in validator(kind).iter_errors(one(production, kind))]
    assert errors == []


@pytest.mark.parametrize(
    ("kind", "path", "typo"),
    [
        ("Rollout", ("spec", "strategy", "canary", "steps", 0), "setWieght"),
        ("Rollout", ("spec", "workloadRef"), "scaledown"),
        ("AnalysisTemplate", ("spec", "metrics", 0), "sucessCondition"),
        ("AnalysisTemplate", ("spec", "metrics", 0, "provider", "prometheus"), "adress"),
    ],
)
def test_the_schemas_reject_a_misspelt_field(production, kind, path, typo):
    resource = json.loads(json.dumps(one(production, kind)))
    place = resource
    for key in path:
        place = place[key]
    place[typo] = place.get(typo, 1)
    messages = " ".join(e.message for e in validator(kind).iter_errors(resource))
    assert f"'{typo}' was unexpected" in messages


@pytest.mark.parametrize("weights", [[50, 10], [10, 10], [0, 50], [10, 100], []])
def test_weights_must_increase_below_100(tmp_path, weights):
    section = PARAMS.model_dump() | {"weights": weights}
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"canary": section}))
    with pytest.raises(ParamsError, match=r"canary\.weights"):
        load_section("canary", CanaryParams, path)
