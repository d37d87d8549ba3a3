"""Release: build the bento, containerize it under an immutable tag, push it, and describe it.

A merge turns into an image that a GitOps manifest can name by digest:

- ``bento``: export the ``serve`` dependency group from ``uv.lock`` as pinned requirements, build
  the bento from ``bentofile.yaml`` with traceability labels (git commit, data hash, model,
  metrics), and write its tag, labels and size to a JSON report. Its version is a hash of what
  goes into it, so building the same inputs again reuses the bento already in the store.
- ``image``: lint the generated Dockerfile (hadolint), ask the registry about
  ``<repo>:<bento version>-<git short commit>``, and build it with Docker or buildah; a tag the
  registry already holds is not built again: the report takes its digest from the registry.
- ``push``: push it and record the reference by digest (``<repo>@sha256:...``); a tag is never
  overwritten, and pushing a tag the registry already holds with the same digest does nothing.
- ``sbom``: an SPDX JSON SBOM of the image (syft).

A registry that cannot say whether a tag exists (unreachable, no credentials, a server error)
stops ``image`` and ``push``: only its definite "not found" lets a tag be pushed.

Usage: ``python -m pipelines.release.build {bento,image,push,sbom} ...`` (see ``--help``)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.core.io import run_stage
from pipelines.release.bento import build_bento
from pipelines.release.image import build_image, push_image, write_sbom
from pipelines.release.reference import default_repository


def main(argv: list[str] | None = None) -> int:
    """Run one release step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    bento = steps.add_parser("bento", help="build the bento and write its report")
    bento.add_argument("--bentofile", type=Path, required=True)
    bento.add_argument("--out", type=Path, required=True, help="the bento report (JSON)")
    image = steps.add_parser("image", help="build the image of the bento in the bento report")
    image.add_argument("--bento-report", type=Path, required=True)
    image.add_argument(
        "--repo", default="", help="image repository, e.g. ghcr.io/o/name (default: localhost/NAME)"
    )
    image.add_argument("--backend", default=None, help="docker or buildah (default: detected)")
    image.add_argument("--out", type=Path, required=True, help="the image report (JSON)")
    image.add_argument(
        "--gate", type=Path, default=None, help="reports/gate.json: its verdict becomes a label"
    )
    push = steps.add_parser("push", help="push the image and record its digest")
    push.add_argument("--report", type=Path, required=True, help="the image report (JSON)")
    sbom = steps.add_parser("sbom", help="write an SPDX JSON SBOM of the image")
    sbom.add_argument("--report", type=Path, required=True, help="the image report (JSON)")
    sbom.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # Offline first: BentoML would otherwise report usage over the network.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

    if args.step == "bento":
        report = build_bento(args.bentofile, args.out)
        print(f"bento {report.tag} ({report.size_bytes / 1e6:.1f} MB) -> {args.out}")
    elif args.step == "image":
        repository = args.repo or default_repository()
        build_image(args.bento_report, repository, args.backend or None, args.out, args.gate)
    elif args.step == "push":
        push_image(args.report)
    else:
        write_sbom(args.report, args.out)
    return 0


if __name__ == "__main__":
    run_stage(main)
