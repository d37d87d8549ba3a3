"""The image each Kustomize overlay deploys: read it, or write a new one by digest.

An overlay's ``kustomization.yaml`` pins the model server's image in its ``images:`` entry
(``newName`` and ``digest``). Writing a new image replaces those two values where they stand and
leaves every other byte of the file as it was, comments included, so a release commit's diff is
the image change and nothing else. Writing the image an overlay already has changes nothing.

What an overlay deploys is what Argo CD reads: its Application (in ``deploy/argocd/``) names the
git revision. Staging's Application watches the branch ``deploy/staging``, which the release
writes to (:mod:`pipelines.release.writeback`), so ``show`` reads staging's image from
``origin/deploy/staging``; an overlay watched on the checked-out branch is read from the files.

Usage::

    python -m pipelines.release.manifests set OVERLAY REPOSITORY@sha256:DIGEST   # make set-image
    python -m pipelines.release.manifests show OVERLAY                           # make show-image
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from pipelines.core.io import PipelineError, run_stage, write_atomically
from pipelines.release.reference import ImageRef, parse_reference

DEFAULT_OVERLAYS = Path("deploy/overlays")
DEFAULT_ARGOCD = Path("deploy/argocd")
IMAGE_NAME = "model-server"  # the image name in deploy/base that every overlay replaces


def _image_entry(text: str, name: str) -> dict[str, yaml.Node]:
    """The ``images:`` entry called ``name`` in a kustomization, as its key -> value nodes."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise PipelineError(f"not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(root, yaml.MappingNode):
        raise PipelineError("not a kustomization: expected a mapping at the top")
    top = {key.value: value for key, value in root.value}
    images = top.get("images")
    if isinstance(images, yaml.SequenceNode):
        for item in images.value:
            if isinstance(item, yaml.MappingNode):
                fields = {key.value: value for key, value in item.value}
                entry_name = fields.get("name")
                if isinstance(entry_name, yaml.ScalarNode) and entry_name.value == name:
                    return fields
    raise PipelineError(f"no `images:` entry with `name: {name}`")


def _image_fields(text: str, name: str) -> tuple[yaml.ScalarNode, yaml.ScalarNode]:
    """The ``newName`` and ``digest`` value nodes of the ``images:`` entry ``name``."""
    fields = _image_entry(text, name)
    if "newTag" in fields:
        raise PipelineError(
            f"the `images:` entry `{name}` has `newTag:`: remove it, overlays deploy images "
            "by digest only"
        )
    nodes = []
    for key in ("newName", "digest"):
        node = fields.get(key)
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            raise PipelineError(
                f"the `images:` entry `{name}` has no `{key}:` value: give it `newName:` and "
                "`digest:` lines (the image by digest)"
            )
        nodes.append(node)
    return nodes[0], nodes[1]


def read_image(text: str, name: str = IMAGE_NAME) -> ImageRef:
    """The image a kustomization's ``images:`` entry ``name`` deploys.

    Raises:
        PipelineError: the entry is missing, incomplete, has a ``newTag`` or an invalid value.
    """
    repository, digest = _image_fields(text, name)
    return parse_reference(f"{repository.value}@{digest.value}")


def write_image(text: str, image: ImageRef, name: str = IMAGE_NAME) -> str:
    """Return ``text`` with the ``images:`` entry ``name`` set to ``image``.

    Only the ``newName`` and ``digest`` values change, in place and in their quoting style;
    every other character is kept.

    Raises:
        PipelineError: the entry is missing, incomplete or has a ``newTag``.
    """
    repository, digest = _image_fields(text, name)
    # From the end of the text, so that the earlier offsets stay valid.
    edits = sorted(
        [(repository, image.repository), (digest, image.digest)],
        key=lambda edit: edit[0].start_mark.index,
        reverse=True,
    )
    for node, value in edits:
        quote = node.style if node.style in {'"', "'"} else ""
        start, end = node.start_mark.index, node.end_mark.index
        text = f"{text[:start]}{quote}{value}{quote}{text[end:]}"
    if read_image(text, name) != image:  # e.g. a value spread over several lines
        raise PipelineError(f"could not rewrite the `images:` entry `{name}` in place")
    return text


def overlay_file(overlays: Path, overlay: str) -> Path:
    """The kustomization file of ``overlay``, one of the directories of ``overlays``.

    Raises:
        PipelineError: ``overlay`` is not one of them.
    """
    known = sorted(path.parent.name for path in overlays.glob("*/kustomization.yaml"))
    if overlay not in known:
        raise PipelineError(
            f"unknown overlay {overlay!r}: choose one of {', '.join(known) or '(none)'} "
            f"(the directories of {overlays} with a kustomization.yaml)"
        )
    return overlays / overlay / "kustomization.yaml"


def set_image(path: Path, image: ImageRef) -> bool:
    """Write ``image`` into the kustomization at ``path``; return whether the file changed."""
    text = path.read_text(encoding="utf-8")
    try:
        updated = write_image(text, image)
    except PipelineError as error:
        raise PipelineError(f"{path}: {error}") from error
    if updated == text:
        return False
    write_atomically(path, lambda partial: partial.write_text(updated, encoding="utf-8"))
    return True


def show_image(path: Path) -> ImageRef:
    """The image the kustomization at ``path`` deploys."""
    try:
        return read_image(path.read_text(encoding="utf-8"))
    except PipelineError as error:
        raise PipelineError(f"{path}: {error}") from error


def watched_revision(argocd: Path, overlay: str) -> str:
    """The git revision Argo CD deploys ``overlay`` from.

    That is the ``targetRevision`` of the Application in ``argocd`` whose source path ends in
    ``overlays/<overlay>`` (``HEAD``, the default branch, when it names none).

    Raises:
        PipelineError: no Application deploys that overlay.
    """
    for path in sorted(argocd.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict) or document.get("kind") != "Application":
                continue
            source = (document.get("spec") or {}).get("source") or {}
            if PurePosixPath(str(source.get("path", ""))).parts[-2:] == ("overlays", overlay):
                return str(source.get("targetRevision") or "HEAD")
    raise PipelineError(
        f"no Argo CD Application in {argocd} deploys overlays/{overlay}: add one whose "
        f"spec.source.path is deploy/overlays/{overlay}"
    )


def current_branch(cwd: Path | None = None) -> str | None:
    """The branch checked out in ``cwd`` (default: here), or None (a detached HEAD)."""
    done = subprocess.run(
        ["git", "symbolic-ref", "--short", "-q", "HEAD"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def follows_checkout(revision: str) -> bool:
    """Whether Argo CD's ``revision`` is the branch checked out here (so the files are it)."""
    return revision == "HEAD" or revision == current_branch()


def deployed_image(overlays: Path, argocd: Path, overlay: str, remote: str = "origin") -> ImageRef:
    """The image ``overlay`` runs: its kustomization at the revision Argo CD watches.

    Raises:
        PipelineError: the overlay or its Application is unknown, or the watched branch has not
            been fetched (or made: the first release makes ``deploy/staging``).
    """
    path = overlay_file(overlays, overlay)
    revision = watched_revision(argocd, overlay)
    if follows_checkout(revision):
        return show_image(path)
    ref = f"{remote}/{revision}"
    done = subprocess.run(
        ["git", "show", f"{ref}:./{path.as_posix()}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise PipelineError(
            f"Argo CD deploys {overlay} from the branch {revision}, and {ref} is not here: "
            f"`git fetch {remote} {revision}` (the first release makes it; until then "
            f"{overlay} runs nothing from this repository)"
        )
    print(f"{overlay} runs what {ref} says", file=sys.stderr)
    try:
        return read_image(done.stdout)
    except PipelineError as error:
        raise PipelineError(f"{ref}:{path}: {error}") from error


def main(argv: list[str] | None = None) -> int:
    """Set or show the image of an overlay."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--overlays",
        type=Path,
        default=DEFAULT_OVERLAYS,
        metavar="DIR",
        help=f"the directory of the overlays (default: {DEFAULT_OVERLAYS})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    set_parser = commands.add_parser("set", help="write an image, by digest, into an overlay")
    set_parser.add_argument("overlay")
    set_parser.add_argument("image", help="REPOSITORY@sha256:<64 hex>")
    show_parser = commands.add_parser(
        "show", help="print the image an overlay deploys, at the revision Argo CD watches"
    )
    show_parser.add_argument("overlay")
    show_parser.add_argument(
        "--argocd",
        type=Path,
        default=DEFAULT_ARGOCD,
        metavar="DIR",
        help=f"the Argo CD Applications (default: {DEFAULT_ARGOCD})",
    )
    args = parser.parse_args(argv)

    if args.command == "show":
        print(deployed_image(args.overlays, args.argocd, args.overlay))
        return 0
    path = overlay_file(args.overlays, args.overlay)
    image = parse_reference(args.image)
    changed = set_image(path, image)
    print(f"{path}: {image}{'' if changed else ' (unchanged)'}")
    return 0


if __name__ == "__main__":
    run_stage(main)
