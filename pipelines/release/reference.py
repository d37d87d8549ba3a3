"""Image references: the grammar of names, tags and digests, and where a registry lives.

One grammar (distribution/reference's, without the rarely used IPv6 host) for everything that
names an image: the build's tags, the pushes by digest, the overlays and the act stand-ins.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from pipelines.core.io import PipelineError
from pipelines.params import RegisterParams, load_section

# The grammar of distribution/reference: an optional registry host (with port), then lowercase
# path components separated by "/"; a tag; a sha256 digest. Matched whole (``fullmatch``).
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"(?:{_HOST}/)?{_PATH}(?:/{_PATH})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def model_name() -> str:
    """``register.model_name`` of params.yaml: the bento's, the image's and the service's name."""
    return load_section("register", RegisterParams).model_name


def default_repository() -> str:
    """``localhost/<register.model_name>``: where a local build goes when no IMAGE_REPO is given."""
    return f"localhost/{model_name()}"


def image_name(repository: str, tag: str) -> str:
    """``repository:tag``, after checking both.

    Raises:
        PipelineError: The repository or the tag is malformed, or the tag is ``latest``.
    """
    if not REPOSITORY.fullmatch(repository):
        raise PipelineError(
            f"IMAGE_REPO '{repository}' is not an image repository: use lower case, e.g. "
            f"ghcr.io/owner/name or {default_repository()}, with no tag or digest"
        )
    if tag == "latest" or not TAG.fullmatch(tag):
        raise PipelineError(f"'{tag}' is not an immutable image tag")
    return f"{repository}:{tag}"


def split_image(image: str) -> tuple[str, str]:
    """Split ``repository:tag`` into its repository and tag (a registry port is not a tag)."""
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise PipelineError(f"image '{image}' has no tag")
    return repository, tag


def digest_ref(image: str, digest: str) -> str:
    """The reference by digest of a pushed image: ``<repository>@sha256:<hex>``.

    Raises:
        PipelineError: ``digest`` is not a sha256 digest.
    """
    digest = digest.strip()
    if not DIGEST.fullmatch(digest):
        raise PipelineError(f"'{digest}' is not a sha256 image digest")
    return f"{split_image(image)[0]}@{digest}"


def check_digest_ref(reference: str) -> str:
    """Return ``reference`` if it names an image by digest, else raise a readable error."""
    repository, _, digest = reference.partition("@")
    if not REPOSITORY.fullmatch(repository) or not DIGEST.fullmatch(digest):
        raise PipelineError(
            f"'{reference}' is not an image reference by digest (<repository>@sha256:<64 hex>)"
        )
    return reference


def registry_host(image: str) -> str | None:
    """The registry host of an image reference, or None for Docker Hub's implicit one."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def is_loopback(image: str) -> bool:
    """Whether the image lives in a registry on this machine, which speaks plain HTTP.

    Docker treats 127.0.0.0/8 registries as insecure by default; buildah, skopeo and syft need
    to be told. Every other registry keeps TLS verification.
    """
    host = registry_host(image)
    if host is None:
        return False
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local_name(image: str) -> bool:
    """Whether ``image`` is a local-only name (``localhost/<name>``, no port): in no registry."""
    return registry_host(image) == "localhost"


def file_digest(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes: how registries and this module name content."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class ImageRef:
    """An image by digest: ``<repository>@sha256:<64 hex>``."""

    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


def parse_reference(reference: str) -> ImageRef:
    """Parse ``REPOSITORY@sha256:<64 hex>``.

    Raises:
        PipelineError: no digest, a tag beside the digest, another digest algorithm or length,
            or an invalid repository name.
    """
    example = "give the pushed image by digest, e.g. ghcr.io/owner/my-model@sha256:<64 hex>"
    if not reference:
        raise PipelineError(f"no image given: {example}")
    repository, at, digest = reference.partition("@")
    if not at:
        raise PipelineError(f"image {reference!r} has no digest: {example}")
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.split(":", 1)[1]
        raise PipelineError(
            f"image {reference!r} has a tag ({tag!r}) and a digest: drop the tag, the digest "
            "alone says which image runs"
        )
    if not DIGEST.fullmatch(digest):
        raise PipelineError(
            f"image {reference!r}: the digest must be 'sha256:' and 64 lowercase hex "
            f"characters, not {digest!r}"
        )
    if not REPOSITORY.fullmatch(repository):
        raise PipelineError(
            f"image {reference!r}: {repository!r} is not a valid repository name (an optional "
            "registry host, then lowercase path components separated by '/')"
        )
    return ImageRef(repository, digest)
