"""`make lint-deploy` passes on deploy/, and each of its checkers fails on a broken copy."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifests import OVERLAYS, edit, make, one, render


@pytest.fixture(scope="session")
def lint_deploy() -> subprocess.CompletedProcess[str]:
    """One run of `make lint-deploy` on the repository's deploy/ (checkov as installed)."""
    return make("lint-deploy")


def test_lint_deploy_passes(lint_deploy):
    assert lint_deploy.returncode == 0, lint_deploy.stdout + lint_deploy.stderr
    # checkov checked something: a run that found nothing to check reports 0 passed.
    assert "Failed checks: 0," in lint_deploy.stdout
    assert "Passed checks: 0," not in lint_deploy.stdout


def lint_copy(deploy: Path) -> str:
    """Run `make lint-deploy` on ``deploy``; it must fail. Returns everything it printed."""
    result = make("lint-deploy", f"DEPLOY={deploy}")
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_kubernetes_validate_rejects_a_misspelt_field(deploy_copy):
    edit(
        deploy_copy / "base" / "deployment.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFileSystem: true",
    )
    output = lint_copy(deploy_copy)
    assert "readOnlyRootFileSystem" in output
    assert "kubernetes-validate" in output


def test_kubernetes_validate_rejects_a_wrong_type(deploy_copy):
    edit(deploy_copy / "base" / "service.yaml", "port: 80", "port: eighty")
    assert "eighty" in lint_copy(deploy_copy)


def test_checkov_rejects_a_privileged_root_container_with_a_token(deploy_copy):
    # One broken copy for three checks: each checkov run takes seconds.
    deployment = deploy_copy / "base" / "deployment.yaml"
    edit(deployment, "privileged: false", "privileged: true")
    # Root: without runAsNonRoot, and uid 0 in the pod's and the container's context.
    edit(deployment, "        runAsNonRoot: true\n", "")
    edit(deployment, "            runAsNonRoot: true\n", "")
    for _ in range(2):
        edit(deployment, "runAsUser: 1034", "runAsUser: 0")
    edit(deployment, "automountServiceAccountToken: false", "automountServiceAccountToken: true")
    output = lint_copy(deploy_copy)
    assert "CKV_K8S_16" in output  # privileged container
    assert "CKV_K8S_23" in output  # root container
    assert "CKV_K8S_38" in output  # service account token mounted
    # Both overlays were rendered and checked: checkov names each resource by its overlay.
    for overlay in OVERLAYS:
        assert f"FAILED for resource: overlay:{overlay}:Deployment." in output


def patch_one_overlay(deploy: Path, overlay: str, patch: list[dict[str, Any]]) -> str:
    """Add a JSON patch of the Deployment to ``overlay`` alone; return the Deployment's name."""
    path = deploy / "overlays" / overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization.setdefault("patches", []).append(
        {"target": {"kind": "Deployment"}, "patch": yaml.safe_dump(patch)}
    )
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return one(render(path.parent), "Deployment")["metadata"]["name"]


# Each overlay is validated in its own right: breaking one overlay, and only that one, fails with
# kubernetes-validate's own message about the resource (the Makefile's loop echoes every
# overlay's name whether or not the checker reads it).
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_checks_each_overlay(deploy_copy, overlay):
    field = "terminationGracePeriodSecondz"
    patch = [{"op": "add", "path": f"/spec/template/spec/{field}", "value": 30}]
    name = patch_one_overlay(deploy_copy, overlay, patch)
    output = lint_copy(deploy_copy)
    assert f"did not validate for resource deployment/{name} " in output
    assert f"'{field}' was unexpected" in output


@pytest.mark.parametrize(
    ("file", "old", "new", "reported"),
    [
        (
            "staging.yaml",
            "targetRevision: deploy/staging",
            "targetRevison: deploy/staging",
            "'targetRevison' was unexpected",
        ),
        (
            "production.yaml",
            "selfHeal: true",
            "selfHeal: always",
            "'always' is not of type 'boolean'",
        ),
        ("project.yaml", "sourceRepos:", "sourceRepo:", "'sourceRepo' was unexpected"),
    ],
)
def test_argo_cd_schema_rejects_a_typo(deploy_copy, file, old, new, reported):
    edit(deploy_copy / "argocd" / file, old, new)
    output = lint_copy(deploy_copy)
    assert f"{file}::" in output
    assert reported in output


def test_promtool_rejects_a_broken_rule(deploy_copy):
    edit(deploy_copy / "monitoring" / "rules.yml", "(increase(", "(increase((")
    output = lint_copy(deploy_copy)
    assert "promtool check rules" in output
    assert "could not parse expression" in output
