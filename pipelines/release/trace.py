"""Lineage of an image: the commit, data, stages, MLflow run, gate verdict and card behind it.

Usage: ``python -m pipelines.release.trace IMAGE`` or ``--overlay staging|production`` (the
image that overlay runs, at the revision Argo CD watches: :func:`manifests.deployed_image`);
``make trace``.

The image's labels (``make image`` copies the bento's labels, :func:`build.bento_labels`, onto
it; ``skopeo inspect`` reads them without pulling the layers) name the git commit, the data hash
and the MLflow run. Git at that commit gives the ``dvc.lock`` stage hashes, the recorded data
hash (checked against the label); DVC at that commit gives the model card. The gate verdict is the
image's ``gate_verdict`` label: release.yml gates the merge against main before it (``make report``)
and builds the image with ``GATE=reports/gate.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError, run_stage
from pipelines.core.lineage import stage_hashes
from pipelines.release.manifests import DEFAULT_ARGOCD, DEFAULT_OVERLAYS, deployed_image
from pipelines.release.reference import is_loopback

NOT_RECORDED = (
    "not recorded: the image has no `gate_verdict` label (release.yml records it: "
    "`make report BASE=<main before the merge>`, then `make image GATE=reports/gate.json`)"
)


@dataclass(frozen=True)
class Lineage:
    """Everything known about where an image came from."""

    image: str
    commit: str | None
    data_md5: str | None
    recorded_data_md5: str | None
    mlflow_run_id: str | None
    mlflow_model_uri: str | None
    stages: dict[str, dict[str, str]] = field(default_factory=dict)
    gate: str = NOT_RECORDED
    card: str | None = None
    problems: list[str] = field(default_factory=list)


# --- pure core ------------------------------------------------------------------------------


def image_labels(inspected: Any) -> dict[str, str]:
    """The labels of ``skopeo inspect`` (``Labels``) or ``podman inspect`` (``Config.Labels``).

    Raises:
        PipelineError: The document is neither.
    """
    if isinstance(inspected, list) and len(inspected) == 1:
        inspected = inspected[0]  # podman inspect answers a list of one
    if not isinstance(inspected, dict):
        raise PipelineError("the image inspection is not a JSON object: is it an image?")
    labels = inspected.get("Labels")
    if labels is None:
        labels = (inspected.get("Config") or {}).get("Labels")
    return {str(k): str(v) for k, v in (labels or {}).items()}


def data_md5(dvc_file_text: str | None) -> str | None:
    """The hash a ``.dvc`` file records, or None."""
    outs = (yaml.safe_load(dvc_file_text) or {}).get("outs") if dvc_file_text else None
    return str(outs[0].get("md5")) if outs else None


def lineage(
    image: str,
    labels: dict[str, str],
    *,
    lock_text: str | None,
    dvc_file_text: str | None,
    card: str | None,
) -> Lineage:
    """Put the labels and what git holds at their commit together; list what disagrees."""
    commit = labels.get("git_commit")
    problems = []
    if commit is None:
        problems.append(
            "the image has no git_commit label: it was not built by `make image` "
            "(or before images carried the bento's labels)"
        )
    elif lock_text is None:
        problems.append(
            f"commit {commit} or its dvc.lock is not in this repository: `git fetch origin` "
            "(the image may come from another repository or an unpushed commit)"
        )
    recorded = data_md5(dvc_file_text)
    label_md5 = labels.get("data_md5")
    if recorded and label_md5 and recorded != label_md5:
        problems.append(f"the data_md5 label {label_md5} differs from {recorded} at the commit")
    if labels.get("git_dirty") == "true":
        problems.append("built from a work tree with uncommitted changes (git_dirty=true)")
    return Lineage(
        image=image,
        commit=commit,
        data_md5=label_md5,
        recorded_data_md5=recorded,
        mlflow_run_id=labels.get("mlflow_run_id"),
        mlflow_model_uri=labels.get("mlflow_model_uri"),
        stages=stage_hashes(yaml.safe_load(lock_text) or {}) if lock_text else {},
        gate=labels.get("gate_verdict", NOT_RECORDED),
        card=card,
        problems=problems,
    )


def render(found: Lineage) -> str:
    """The lineage as text for a terminal (Markdown-friendly)."""

    def shown(value: str | None) -> str:
        return value if value else "unknown"

    lines = [
        f"# Lineage of {found.image}",
        "",
        f"- Commit: {shown(found.commit)}",
        f"- Data hash: {shown(found.data_md5)}"
        + (
            f" (data.dvc at the commit: {found.recorded_data_md5})"
            if found.recorded_data_md5
            else ""
        ),
        f"- MLflow run: {shown(found.mlflow_run_id)}",
        f"- MLflow model: {shown(found.mlflow_model_uri)}",
        f"- Gate verdict of the merge: {found.gate}",
    ]
    if found.stages:
        lines += ["", "## dvc.lock at the commit", ""]
        lines += [
            f"- {stage}: {path} {md5}"
            for stage, outs in found.stages.items()
            for path, md5 in outs.items()
        ]
    if found.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in found.problems]
    lines += ["", "## Model card", ""]
    lines.append(found.card.rstrip() if found.card else "Not available (see above).")
    return "\n".join(lines) + "\n"


# --- reading images and git -----------------------------------------------------------------


def inspect_image(image: str) -> dict[str, str]:
    """The image's labels: ``podman inspect`` for a local image, else ``skopeo inspect``.

    A loopback registry (127.0.0.1, localhost) is asked over plain HTTP, as the local release
    path pushes to one.
    """
    podman = shutil.which("podman")
    if podman:
        local = subprocess.run(
            [podman, "image", "inspect", image], capture_output=True, text=True, check=False
        )
        if local.returncode == 0:
            return image_labels(json.loads(local.stdout))
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise PipelineError("skopeo is not installed (apt-get install skopeo): cannot read labels")
    tls = ["--tls-verify=false"] if is_loopback(image) else []
    done = subprocess.run(
        [skopeo, "inspect", *tls, f"docker://{image}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
        raise PipelineError(
            f"cannot inspect {image}: {said} (log in to its registry, or check the reference)"
        )
    return image_labels(json.loads(done.stdout))


def git(*args: str) -> str | None:
    """A git command's output in the current repository, None when it fails."""
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def card_at(commit: str) -> str | None:
    """The model card that ``dvc.lock`` records at ``commit``, from the DVC cache or remote."""
    from dvc.api import DVCFileSystem

    params = yaml.safe_load(git("show", f"{commit}:params.yaml") or "") or {}
    path = (params.get("paths") or {}).get("card")
    if not path:
        return None
    try:
        return str(DVCFileSystem(".", rev=commit).read_text(path))
    except Exception:
        return None


def trace(image: str) -> Lineage:
    """Read the image's labels and what git and DVC hold at its commit."""
    labels = inspect_image(image)
    commit = labels.get("git_commit")
    lock_text = dvc_file = card = None
    if commit and git("cat-file", "-e", f"{commit}^{{commit}}") is not None:
        lock_text = git("show", f"{commit}:dvc.lock")
        params = yaml.safe_load(git("show", f"{commit}:params.yaml") or "") or {}
        data = (params.get("paths") or {}).get("data", "data")
        dvc_file = git("show", f"{commit}:{data}.dvc")
        card = card_at(commit)
    found = lineage(image, labels, lock_text=lock_text, dvc_file_text=dvc_file, card=card)
    if commit and lock_text is not None and card is None:
        found.problems.append(
            f"the model card of {commit[:12]} is not in the DVC cache or remote (`dvc pull`)"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the lineage of an image, or of the image an overlay deploys."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an image reference (by digest or tag)")
    parser.add_argument("--overlay", help="staging, production, ...: the image it deploys")
    parser.add_argument("--overlays", type=Path, default=DEFAULT_OVERLAYS, metavar="DIR")
    parser.add_argument("--argocd", type=Path, default=DEFAULT_ARGOCD, metavar="DIR")
    args = parser.parse_args(argv)
    if bool(args.image) == bool(args.overlay):
        raise PipelineError("give an image or an overlay: make trace IMAGE=<ref> or OVERLAY=<name>")
    image = args.image or str(deployed_image(args.overlays, args.argocd, args.overlay))
    print(render(trace(image)), end="")
    return 0


if __name__ == "__main__":
    run_stage(main)
