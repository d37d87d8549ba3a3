"""`make set-image` writes an overlay's image by digest and nothing else; `show-image` reads it."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.release.manifests import read_image, watched_revision, write_image
from pipelines.release.reference import ImageRef, parse_reference
from tests.support.manifests import DEPLOY, OVERLAYS, edit, make, one, render

DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER = "sha256:" + "fedcba9876543210" * 4

KUSTOMIZATION = f"""\
# Staging: a comment that must survive.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization

namespace: my-model-staging   # aligned comment

resources:
    - ../../base

images:
  - name: other-image
    newName: example.org/other
    digest: {OTHER}
  - name: model-server
    newName: "ghcr.io/owner/my-model"   # written by make set-image
    digest: '{OTHER}'
# trailing comment, no newline at the end"""


@pytest.mark.parametrize(
    "reference",
    [
        f"ghcr.io/acme/my-model@{DIGEST}",
        f"localhost:5000/my-model@{DIGEST}",
        f"registry.example.com:443/team/ml/my_model.v2@{DIGEST}",
        f"my-model@{DIGEST}",
    ],
)
def test_a_reference_by_digest_is_accepted(reference):
    image = parse_reference(reference)
    assert str(image) == reference
    assert image.digest == DIGEST


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("", "no image given"),
        ("ghcr.io/acme/my-model", "has no digest"),
        ("ghcr.io/acme/my-model:1.0", "has no digest"),
        (f"ghcr.io/acme/my-model:1.0@{DIGEST}", "has a tag ('1.0') and a digest"),
        (f"localhost:5000/my-model:v1@{DIGEST}", "has a tag ('v1') and a digest"),
        ("ghcr.io/acme/my-model@sha256:abc", "64 lowercase hex"),
        (f"ghcr.io/acme/my-model@{DIGEST.upper()}", "64 lowercase hex"),
        ("ghcr.io/acme/my-model@sha512:" + "0" * 128, "must be 'sha256:'"),
        (f"ghcr.io/Acme/my-model@{DIGEST}", "not a valid repository name"),
        (f"ghcr.io/acme//my-model@{DIGEST}", "not a valid repository name"),
        (f"@{DIGEST}", "not a valid repository name"),
    ],
)
def test_a_reference_without_a_plain_digest_is_rejected(reference, message):
    with pytest.raises(PipelineError) as error:
        parse_reference(reference)
    assert message in str(error.value)


def test_write_changes_only_the_two_values_keeping_quotes_and_comments():
    image = ImageRef("registry.example.com/ml/my-model", DIGEST)
    written = write_image(KUSTOMIZATION, image)
    changed = [
        line
        for line in difflib.ndiff(KUSTOMIZATION.splitlines(True), written.splitlines(True))
        if line[0] in "+-"
    ]
    assert changed == [
        '-     newName: "ghcr.io/owner/my-model"   # written by make set-image\n',
        '+     newName: "registry.example.com/ml/my-model"   # written by make set-image\n',
        f"-     digest: '{OTHER}'\n",
        f"+     digest: '{DIGEST}'\n",
    ]
    assert written.endswith("# trailing comment, no newline at the end")
    assert read_image(written) == image
    assert read_image(written, "other-image") == ImageRef("example.org/other", OTHER)


def test_write_is_idempotent():
    image = ImageRef("ghcr.io/acme/my-model", DIGEST)
    once = write_image(KUSTOMIZATION, image)
    assert write_image(once, image) == once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: []\n", "no `images:` entry with `name: model-server`"),
        ("resources: [../../base]\n", "no `images:` entry"),
        ("images:\n  - name: model-server\n    newName: x\n", "no `digest:` value"),
        (
            f"images:\n  - name: model-server\n    newName: x\n    newTag: v1\n"
            f"    digest: {DIGEST}\n",
            "has `newTag:`",
        ),
        ("images: [\n", "not valid YAML"),
        ("- a list\n", "not a kustomization"),
    ],
)
def test_an_overlay_without_a_digest_entry_is_rejected(text, message):
    with pytest.raises(PipelineError, match=message):
        write_image(text, ImageRef("ghcr.io/acme/my-model", DIGEST))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_make_set_image_then_show_image_round_trip(deploy_copy: Path, overlay):
    path = deploy_copy / "overlays" / overlay / "kustomization.yaml"
    before = path.read_bytes()
    reference = f"ghcr.io/acme/my-model@{DIGEST}"

    first = make("set-image", f"DEPLOY={deploy_copy}", f"OVERLAY={overlay}", f"IMAGE={reference}")
    assert first.returncode == 0, first.stderr
    after = path.read_bytes()
    assert after != before
    # Only the image lines differ from the committed file.
    changed = {
        line[2:].split(":")[0].strip()
        for line in difflib.ndiff(before.decode().splitlines(True), after.decode().splitlines(True))
        if line[0] in "+-"
    }
    assert changed == {"newName", "digest"}

    second = make("set-image", f"DEPLOY={deploy_copy}", f"OVERLAY={overlay}", f"IMAGE={reference}")
    assert second.returncode == 0, second.stderr
    assert "(unchanged)" in second.stdout
    assert path.read_bytes() == after

    # Read where Argo CD reads it: here, an Application that follows the checked-out branch
    # (deploy/staging is read from its branch: tests/release/test_writeback.py)
    application = deploy_copy / "argocd" / f"{overlay}.yaml"
    revision = watched_revision(deploy_copy / "argocd", overlay)
    edit(application, f"targetRevision: {revision}", "targetRevision: HEAD")
    shown = make("show-image", f"DEPLOY={deploy_copy}", f"OVERLAY={overlay}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == reference + "\n"  # promote.yml reads it: nothing else on stdout

    deployment = one(render(deploy_copy / "overlays" / overlay), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == reference
    # The other overlay is untouched.
    for other in set(OVERLAYS) - {overlay}:
        name = f"overlays/{other}/kustomization.yaml"
        assert (deploy_copy / name).read_bytes() == (DEPLOY / name).read_bytes()


@pytest.mark.parametrize(
    ("overlay", "image", "message"),
    [
        ("qa", f"ghcr.io/acme/my-model@{DIGEST}", "unknown overlay 'qa'"),
        ("../base", f"ghcr.io/acme/my-model@{DIGEST}", "unknown overlay '../base'"),
        ("staging", "ghcr.io/acme/my-model:latest", "has no digest"),
        ("staging", f"ghcr.io/acme/my-model:1.0@{DIGEST}", "has a tag"),
        ("", f"ghcr.io/acme/my-model@{DIGEST}", "unknown overlay ''"),
    ],
)
def test_make_set_image_rejects_bad_input_in_one_line(deploy_copy, overlay, image, message):
    before = {p: p.read_bytes() for p in deploy_copy.rglob("*.yaml")}
    result = make("set-image", f"DEPLOY={deploy_copy}", f"OVERLAY={overlay}", f"IMAGE={image}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert message in errors[0]
    assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in deploy_copy.rglob("*.yaml")} == before


def test_show_image_of_an_unknown_overlay_fails():
    result = make("show-image", "OVERLAY=qa")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "unknown overlay 'qa': choose one of production, staging" in result.stderr
