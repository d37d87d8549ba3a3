"""What the served image may hold, and how the Deployment runs it: pure checks for image-e2e.

- ``image_problems``: the image carries a compiler, git or a GPU library, or is over its size
  target (``IMAGE_SIZE_LIMIT``);
- ``lockdown``: the container settings of the rendered Deployment (read-only root file system,
  user, the emptyDir mounts that are its only writable paths, its environment), and
  ``podman_run_args``: the same settings as ``podman run`` options, so that ``make image-e2e``
  runs the image as the cluster does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.core.io import PipelineError
from pipelines.release.bento import GPU_PACKAGE

# 500 MB (decimal, as `make image` prints sizes). BentoML's single-stage image was 2.1 GB, of
# which a compiler toolchain, git and CUDA's NCCL took over 1.3 GB; the two-stage image 685 MB,
# of which the packages' test suites and debug symbols took 140 (Dockerfile.template).
IMAGE_SIZE_LIMIT = 500_000_000
# Programs on PATH that build code or fetch it: C/C++ compilers (any target prefix or version
# suffix, e.g. x86_64-linux-gnu-gcc-12), the assembler and linker, make, and git.
TOOL = re.compile(
    r"(?:[\w.-]+-)?(?:gcc|g\+\+|cc|c\+\+|cpp|clang|clang\+\+|tcc|as|ld|ld\.bfd|ld\.gold|make)"
    r"(?:-[\d.]+)?|git(?:-.*)?"
)
# The listing a container prints for ``image_problems``: programs on PATH, then Python packages.
LISTING = (
    'IFS=:; for d in $PATH; do ls -1 "$d" 2>/dev/null; done; echo "--- site-packages"; '
    "ls -1 /app/.venv/lib/python3*/site-packages"
)
SEPARATOR = "--- site-packages"
# What a container of the image prints for ``folder_sizes``: its environment's largest folders.
SIZES = "du -sk /app/.venv/lib/python3*/site-packages/* | sort -rn | head -n 12"


def distribution_name(entry: str) -> str | None:
    """The normalized distribution name of a ``*.dist-info`` folder name, else None."""
    if not entry.endswith(".dist-info"):
        return None
    return entry.removesuffix(".dist-info").rsplit("-", 1)[0].replace("_", "-").lower()


def parse_listing(output: str) -> tuple[list[str], list[str]]:
    """Split the output of ``LISTING`` into programs on PATH and installed distributions.

    Raises:
        PipelineError: The output lacks the separator (the listing did not run to its end).
    """
    programs, separator, packages = output.partition(SEPARATOR)
    if not separator:
        raise PipelineError(f"the image's listing is incomplete: {output[-300:]!r}")
    names = (distribution_name(line.strip()) for line in packages.splitlines())
    return sorted({p.strip() for p in programs.splitlines() if p.strip()}), sorted(
        {n for n in names if n}
    )


def image_problems(
    programs: Iterable[str],
    distributions: Iterable[str],
    size_bytes: int | None,
    limit: int = IMAGE_SIZE_LIMIT,
) -> list[str]:
    """What a lean serving image must not have; empty when it has none of it.

    Args:
        programs: Names of the executables on the image's PATH.
        distributions: Normalized names of the Python distributions in its environment.
        size_bytes: The image's size; None when it could not be measured (itself a problem).
        limit: The size target in bytes.
    """
    problems = []
    tools = sorted(p for p in programs if TOOL.fullmatch(p))
    if tools:
        problems.append(f"build tools on PATH: {', '.join(tools)}")
    gpu = sorted(d for d in distributions if GPU_PACKAGE.fullmatch(d))
    if gpu:
        problems.append(f"GPU packages: {', '.join(gpu)} (use xgboost-cpu)")
    if size_bytes is None:
        problems.append("its size could not be measured")
    elif size_bytes > limit:
        problems.append(f"{size_bytes / 1e6:.0f} MB, over the {limit / 1e6:.0f} MB target")
    return problems


def layer_sizes(history: str) -> list[tuple[int, str]]:
    """The image's non-empty layers, oldest first: bytes and the instruction that made each.

    Args:
        history: ``podman history --format json`` output (newest first); anything podman
            printed before the JSON (a warning) is skipped.
    """
    start = re.search(r"^\[", history, re.MULTILINE)
    layers = json.loads(history[start.start() :] if start else history)
    made = []
    for layer in reversed(layers):
        if int(layer.get("size") or 0) > 0:
            step = re.sub(r"^/bin/(?:ba)?sh -c (?:#\(nop\) )?", "", layer.get("CreatedBy", ""))
            made.append((int(layer["size"]), " ".join(step.split())))
    return made


def folder_sizes(du: str) -> list[tuple[int, str]]:
    """``du -sk`` output as (bytes, folder name) pairs, in its order."""
    pairs = (line.split("\t", 1) for line in du.strip().splitlines() if "\t" in line)
    return [(int(kib) * 1024, path.rstrip("/").rsplit("/", 1)[-1]) for kib, path in pairs]


def size_lines(layers: list[tuple[int, str]], folders: list[tuple[int, str]]) -> list[str]:
    """What the image holds by size, to print: each layer, then its largest packages."""
    lines = [f"{size / 1e6:6.1f} MB  {made_by[:90]}" for size, made_by in layers]
    biggest = ", ".join(f"{name} {size / 1e6:.0f}" for size, name in folders)
    return [*lines, f"largest in its Python environment (MB): {biggest}"]


@dataclass(frozen=True)
class Lockdown:
    """How the Deployment runs its container.

    Attributes:
        user: ``uid:gid``.
        writable: The mount paths of its emptyDir volumes: all it may write to.
        env: Its environment variables with literal values.
        sizes: Each writable path's ``sizeLimit`` where one is set (``256Mi``).
    """

    user: str
    writable: tuple[str, ...]
    env: Mapping[str, str]
    sizes: Mapping[str, str]


def deployment(rendered: str) -> dict[str, Any]:
    """The one Deployment of a rendered overlay (``kubectl kustomize`` output).

    Raises:
        PipelineError: There is not exactly one Deployment.
    """
    found = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment"]
    if len(found) != 1:
        raise PipelineError(f"the rendered manifest has {len(found)} Deployments, not one")
    return found[0]


def lockdown(rendered: str) -> Lockdown:
    """The first container's lockdown as the rendered Deployment declares it.

    Raises:
        PipelineError: Its root file system is not read-only, it has no numeric user, or it
            mounts a volume that is not an emptyDir (which a local run cannot stand in for).
    """
    pod = deployment(rendered)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    if context.get("readOnlyRootFilesystem") is not True:
        raise PipelineError(
            "the Deployment's container does not set securityContext.readOnlyRootFilesystem: "
            "true; set it in deploy/base/deployment.yaml"
        )
    if "runAsUser" not in context:
        raise PipelineError("the Deployment sets no runAsUser: give the image's uid (1034)")
    user = f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    writable, sizes = [], {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "emptyDir" not in volume:
            raise PipelineError(
                f"volume {mount['name']} (mounted at {mount['mountPath']}) is not an emptyDir: "
                "image-e2e stands in for emptyDirs only; add its equivalent there"
            )
        if mount.get("readOnly"):
            continue
        writable.append(mount["mountPath"])
        size = (volume["emptyDir"] or {}).get("sizeLimit")
        if size:
            sizes[mount["mountPath"]] = str(size)
    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    return Lockdown(user=user, writable=tuple(writable), env=env, sizes=sizes)


def tmpfs_size(quantity: str) -> str:
    """A Kubernetes quantity (``256Mi``, ``1Gi``, ``500M``) as a tmpfs ``size=`` value in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G|)", quantity)
    if not match:
        raise PipelineError(f"sizeLimit {quantity!r} is not a quantity image-e2e understands")
    return str(int(match[1]) * units[match[2]])


def podman_run_args(lock: Lockdown, env: Mapping[str, str] | None = None) -> list[str]:
    """``podman run`` options that run a container as ``lock`` says.

    The root file system is read-only, with none of podman's default writable /tmp, /var/tmp and
    /run (``--read-only-tmpfs=false``): the only writable paths are tmpfs mounts at the
    emptyDirs' paths, sized as they are. ``env`` adds to or overrides the Deployment's.
    """
    args = ["--read-only", "--read-only-tmpfs=false", "--user", lock.user]
    args += ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
    for path in lock.writable:
        size = f",size={tmpfs_size(lock.sizes[path])}" if path in lock.sizes else ""
        args += ["--tmpfs", f"{path}:rw,nosuid,nodev,mode=1777{size}"]
    for name, value in {**lock.env, **(env or {})}.items():
        args += ["--env", f"{name}={value}"]
    return args


def tmpfs_paths(args: list[str]) -> list[str]:
    """The mount paths of the ``--tmpfs`` options in podman arguments."""
    return [args[i + 1].split(":")[0] for i, a in enumerate(args[:-1]) if a == "--tmpfs"]
