"""The JSON reports that the release steps hand to each other: bento, image, hadolint findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.core.io import PipelineError

Backend = Literal["docker", "buildah"]


class Report(BaseModel):
    """Base of the JSON reports: unknown keys are errors, so a stale format fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Finding(Report):
    """One hadolint finding on the generated Dockerfile."""

    code: str
    level: str
    line: int
    message: str


class BentoReport(Report):
    """What ``bento`` writes: the bento's tag, labels and size."""

    tag: str
    labels: dict[str, str]
    size_bytes: int
    models: list[str]
    requirements: str


class ImageReport(Report):
    """What ``image`` writes and ``push`` completes with the reference by digest."""

    image: str
    bento: str
    backend: Backend
    size_bytes: int | None = None
    hadolint: list[Finding] = []
    digest_ref: str | None = None
    # The registry held the tag before this build: nothing was built, the digest is its answer.
    already_pushed: bool = False


def read_report(path: Path, model: type[Report], make_target: str) -> Any:
    """Read a JSON report written by an earlier step, with a readable error if it is not there.

    Raises:
        PipelineError: The file is missing or does not match the report's format.
    """
    if not path.exists():
        raise PipelineError(f"{path} does not exist: run `make {make_target}` first")
    try:
        return model.model_validate_json(path.read_text())
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in error.errors()
        )
        raise PipelineError(
            f"{path} is not a valid report ({problems}): run `make {make_target}` again"
        ) from None
