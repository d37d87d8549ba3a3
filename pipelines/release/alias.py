"""Registry aliases follow the releases: ``make model-alias ALIAS= MODEL_URI=models:/<name>/<n>``.

The version a release builds gets ``staging`` and a promotion ``production``, so that
``models:/<name>@staging`` is what staging runs. The version is MODEL_URI, or the one the image
an overlay deploys was built from (``OVERLAY=production``: its ``mlflow_model_uri`` label, read
from the registry as ``make trace`` reads it), or by default the one ``models/registry.json``
records. The alias is set on the tracking server ``MLFLOW_TRACKING_URI`` names; without one, the
store is this machine's own sqlite file (a CI job's is gone when the job ends): then this says so
and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from pipelines.core.io import PipelineError, run_stage
from pipelines.params import load_paths
from pipelines.release import trace
from pipelines.release.manifests import DEFAULT_ARGOCD, DEFAULT_OVERLAYS, deployed_image

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)")
# MLflow's rule for an alias: letters, digits, _ and -; not "latest", not a version like v3
ALIAS = re.compile(r"(?!latest$)(?![vV][0-9]+$)[\w-]{1,255}")


def parse_model_uri(uri: str) -> tuple[str, str]:
    """The registered model's name and version in ``models:/<name>/<version>``.

    Raises:
        PipelineError: another form (an alias, a run's artifact path, a stage).
    """
    found = MODEL_URI.fullmatch(uri)
    if not found:
        raise PipelineError(
            f"MODEL_URI={uri!r}: give a registered version, models:/<name>/<version> "
            "(models/registry.json's model_uri)"
        )
    return found["name"], found["version"]


def labelled_model_uri(image: str, labels: dict[str, str]) -> str:
    """The registered version an image was built from: its ``mlflow_model_uri`` label.

    Raises:
        PipelineError: the image has no such label, or it names no registered version.
    """
    uri = labels.get("mlflow_model_uri", "")
    if not uri:
        raise PipelineError(
            f"{image} has no mlflow_model_uri label, so which version it serves is unknown: "
            "give it, make model-alias ALIAS=<alias> MODEL_URI=models:/<name>/<version>"
        )
    try:
        parse_model_uri(uri)
    except PipelineError as error:
        raise PipelineError(f"{image}'s mlflow_model_uri label: {error}") from error
    return uri


def deployed_model_uri(overlay: str, overlays: Path, argocd: Path) -> str:
    """The registered version of the image ``overlay`` deploys (at the revision Argo CD reads)."""
    image = str(deployed_image(overlays, argocd, overlay))
    return labelled_model_uri(image, trace.inspect_image(image))


def set_alias(alias: str, model_uri: str, tracking_uri: str) -> str:
    """Point ``alias`` at the version ``model_uri`` names; return what was done.

    Raises:
        PipelineError: a bad alias or URI, or a version the server does not have.
    """
    if not ALIAS.fullmatch(alias):
        raise PipelineError(
            f"ALIAS={alias!r}: an alias is letters, digits, '_' and '-', and neither 'latest' "
            "nor a version like 'v3'"
        )
    name, version = parse_model_uri(model_uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        before = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        before = None
    if before == version:
        return f"models:/{name}@{alias} is version {version} already ({tracking_uri})"
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as error:
        raise PipelineError(
            f"{tracking_uri} could not point {alias} at {model_uri}: {error.message}"
        ) from error
    was = f" (was version {before})" if before else ""
    return f"models:/{name}@{alias} is now version {version}{was} on {tracking_uri}"


def main(argv: list[str] | None = None) -> int:
    """Set a registry alias on the configured tracking server, or say why nothing is set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", required=True, help="e.g. staging or production")
    parser.add_argument(
        "--model-uri",
        default="",
        help="models:/<name>/<version> (default: the one models/registry.json records)",
    )
    parser.add_argument(
        "--overlay", default="", help="staging, production, ...: the version its image serves"
    )
    parser.add_argument("--overlays", type=Path, default=DEFAULT_OVERLAYS, metavar="DIR")
    parser.add_argument("--argocd", type=Path, default=DEFAULT_ARGOCD, metavar="DIR")
    args = parser.parse_args(argv)
    if args.model_uri and args.overlay:
        raise PipelineError("give MODEL_URI or OVERLAY, not both: each names the version")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if args.overlay:
        try:
            args.model_uri = deployed_model_uri(args.overlay, args.overlays, args.argocd)
        except PipelineError as error:
            if tracking_uri:
                raise
            # Without a server nothing would be set anyway: an overlay whose image no registry
            # holds yet (a new repository's placeholder) must not fail the workflow.
            print(
                f"no tracking server configured (MLFLOW_TRACKING_URI): {args.alias} not set; "
                f"the version {args.overlay}'s image serves is unknown: {error}"
            )
            return 0
    elif not args.model_uri:
        args.model_uri = json.loads(load_paths().registry.read_text())["model_uri"]
    parse_model_uri(args.model_uri)
    if not tracking_uri:
        print(
            f"no tracking server configured (MLFLOW_TRACKING_URI): {args.alias} not set on "
            f"{args.model_uri}, whose store is this machine's own"
        )
        return 0
    print(set_alias(args.alias, args.model_uri, tracking_uri))
    return 0


if __name__ == "__main__":
    run_stage(main)
