"""The merge-to-deploy path on one machine, with no Docker engine and no Docker Hub.

``make image-e2e`` runs what a release does, for real, and checks each result:

1. tools: buildah, podman, skopeo, docker-registry, debootstrap and runc (installed with apt
   when missing and running as root), kubectl;
2. model: the current model (``make run`` first when there is none);
3. bento: ``make bento``;
4. base: the base image that the generated Dockerfile starts ``FROM``, built with debootstrap
   (the root file system is cached in ``~/.cache``, keyed by its package list);
5. registry: a real ``docker-registry`` on 127.0.0.1 (free port, no auth, temporary storage);
6. image: ``make image BACKEND=buildah`` (hadolint, immutable tag);
7. push: ``make push``, then a second push of the same tag, which must be refused;
8. sbom: ``make sbom`` from the registry, by digest;
9. pull: ``podman pull`` by digest into a store of its own;
10. serve: ``podman run`` as the image's non-root user, port published on 127.0.0.1, then
    ``/readyz`` and a ``/predict`` of a row of the real table, whose probability must equal the
    host model's;
11. manifest: ``make set-image OVERLAY=staging DEPLOY=<a copy of deploy/>``, rendered with
    ``kubectl kustomize``, which must name the pushed digest.

Everything it starts (registry, container, storage, temporary directories, mounts) is removed at
the end, on failure or interruption too, and a table of the time of each step is printed.

Usage: ``python -m pipelines.release.image_e2e [--keep]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.release.build import (
    ImageReport,
    check_digest_ref,
    model_name,
    read_report,
)
from pipelines.stage import PipelineError, run_stage

# Command -> Debian package.
APT_TOOLS = {
    "buildah": "buildah",
    "podman": "podman",
    "skopeo": "skopeo",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
    "runc": "runc",
}
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINER_PORT = 3000
BENTO_UID = 1034
READY_TIMEOUT = 180.0
LOG_TAIL = 40
TOLERANCE = 1e-6


# --- pure core -------------------------------------------------------------------------------


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """Debian packages whose commands are not on PATH."""
    return sorted({package for command, package in APT_TOOLS.items() if which(command) is None})


def storage_conf(root: Path) -> str:
    """A containers-storage config keeping every layer under ``root`` (vfs: no kernel mounts)."""
    return f'[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'


def containers_conf(nofile: int, nproc: int) -> str:
    """A containers.conf whose limits podman can apply, with runc as the runtime.

    podman asks for limits above this host's, which the runtime cannot set; crun fails on the
    cgroup layout of such hosts, runc does not.
    """
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )


def registries_conf() -> str:
    """Short names (the Dockerfile's ``FROM python:...``) resolve as Docker Hub's, never asked."""
    return 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'


def registry_config(port: int, storage: Path) -> str:
    """A ``docker-registry`` config: 127.0.0.1 only, no auth, storage in ``storage``."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )


def base_image(dockerfile: str) -> str:
    """The fully qualified image that a Dockerfile's first ``FROM`` names.

    Raises:
        PipelineError: There is no ``FROM`` line.
    """
    found = re.search(r"^FROM\s+(?:--\S+\s+)*(\S+)", dockerfile, flags=re.MULTILINE | re.I)
    if not found:
        raise PipelineError("the generated Dockerfile has no FROM line")
    name = found.group(1)
    first = name.split("/")[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def rootfs_key(suite: str, packages: tuple[str, ...], mirror: str) -> str:
    """The cache key of a debootstrap root file system: what it was built from."""
    text = json.dumps({"suite": suite, "packages": sorted(packages), "mirror": mirror})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def nproc_limit(hard: int, pid_max: int) -> int:
    """The process limit to ask podman for: conmon itself runs with at most ``pid_max``."""
    return pid_max if hard in (resource.RLIM_INFINITY, -1) else min(hard, pid_max)


def request_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A raw table row as a JSON record: NaN becomes null, NumPy scalars Python values."""
    record = {}
    for name, value in row.items():
        plain = value.item() if hasattr(value, "item") else value
        record[name] = None if isinstance(plain, float) and math.isnan(plain) else plain
    return record


def timing_table(steps: list[tuple[str, float, str]]) -> str:
    """A table of each step's name, seconds and outcome, and the total."""
    lines = [f"{'step':<10} {'seconds':>8}  result", f"{'-' * 10} {'-' * 8}  {'-' * 6}"]
    lines += [f"{name:<10} {seconds:>8.1f}  {result}" for name, seconds, result in steps]
    lines.append(f"{'total':<10} {sum(s for _, s, _ in steps):>8.1f}")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """The state of one end-to-end run: its directory, environment and step timings."""

    root: Path
    repo: Path
    logs: Path
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def say(self, message: str) -> None:
        """Print a progress line stamped with the time since the start."""
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        """Time a step, print its start and end, and record it for the table."""
        self.say(f"{name}: {what}")
        begun = time.monotonic()
        try:
            yield
        except BaseException:
            self.steps.append((name, time.monotonic() - begun, "FAILED"))
            raise
        self.steps.append((name, time.monotonic() - begun, "ok"))
        self.say(f"{name}: done in {time.monotonic() - begun:.1f}s")

    def run(self, *args: str, env: Mapping[str, str] | None = None, log: str | None = None) -> str:
        """Run a command; its output goes to a log file, whose tail is shown if it fails."""
        path = self.logs / f"{log or Path(args[0]).name}.log"
        with path.open("a") as out:
            out.write(f"$ {' '.join(args)}\n")
            out.flush()
            done = subprocess.run(
                args,
                cwd=self.repo,
                env={**self.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            out.write(done.stdout)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-LOG_TAIL:])
            raise PipelineError(f"`{' '.join(args)}` exited {done.returncode}:\n{tail}")
        return done.stdout


def ensure_tools(run: Run) -> None:
    """Install the missing Debian packages with apt (as root), or say what is missing."""
    missing = missing_tools()
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise PipelineError(
                f"missing {', '.join(missing)}: install them (as root: "
                f"`apt-get install -y {' '.join(missing)}`) and run `make image-e2e` again"
            )
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q"]
        noninteractive = {"DEBIAN_FRONTEND": "noninteractive"}
        run.say(f"installing {' '.join(missing)} with apt")
        run.run(*apt, "update", env=noninteractive, log="apt")
        run.run(*apt, "install", "-y", *missing, env=noninteractive, log="apt")
    if shutil.which("kubectl") is None:
        raise PipelineError(
            "kubectl is not installed (it renders the overlay with `kubectl kustomize`): "
            "install it from the Kubernetes packages and run `make image-e2e` again"
        )


def rootfs_tarball(run: Run, cache: Path) -> Path:
    """A tarball of a minimal Debian with Python, from the cache or built with debootstrap."""
    tarball = cache / f"rootfs-{SUITE}-{rootfs_key(SUITE, BASE_PACKAGES, MIRROR)}.tar"
    if tarball.exists():
        run.say(f"base: root file system from the cache ({tarball})")
        return tarball
    rootfs = run.root / "rootfs"
    run.say(f"base: debootstrap {SUITE} with {', '.join(BASE_PACKAGES)} (about a minute)")
    run.run(
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(rootfs),
        MIRROR,
        log="debootstrap",
    )
    # The Dockerfile runs a bare `pip install`, which Debian's marker file forbids.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for leftover in [
        *rootfs.glob("var/cache/apt/archives/*.deb"),
        *rootfs.glob("var/lib/apt/lists/*_*"),
    ]:
        leftover.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:
        archive.add(rootfs, arcname=".")
    partial.replace(tarball)
    shutil.rmtree(rootfs)
    return tarball


def import_base(run: Run, tarball: Path, name: str) -> None:
    """Commit the root file system as ``name`` in buildah's store, trusting the host's CAs.

    A host behind a TLS-inspecting proxy trusts extra certificate authorities; without them pip
    inside the build cannot reach PyPI.
    """
    container = run.run("buildah", "from", "scratch", log="base").strip()
    try:
        run.run("buildah", "add", "--quiet", container, str(tarball), "/", log="base")
        if HOST_CA_BUNDLE.exists():
            run.run(
                "buildah",
                "copy",
                "--quiet",
                container,
                str(HOST_CA_BUNDLE),
                str(HOST_CA_BUNDLE),
                log="base",
            )
        run.run(
            "buildah",
            "config",
            "--env",
            f"SSL_CERT_FILE={HOST_CA_BUNDLE}",
            "--cmd",
            "python3",
            container,
            log="base",
        )
        run.run("buildah", "commit", "--quiet", container, name, log="base")
    finally:
        run.run("buildah", "rm", container, log="base")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until ``url`` answers 200, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own URL)
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.5)
    raise PipelineError(f"{url} did not answer 200 within {timeout:.0f}s ({last})")


def post_json(url: str, document: Any) -> Any:
    """POST a JSON document and return the decoded JSON answer."""
    request = urllib.request.Request(  # noqa: S310 (our own URL)
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise PipelineError(f"POST {url} got HTTP {error.code}: {error.read()[:500]!r}") from None


def host_prediction(repo: Path) -> tuple[dict[str, Any], float]:
    """A row of the real table as a request record, and the host model's probability for it."""
    from pipelines.params import load_paths
    from pipelines.schema import load_schema, read_raw
    from pipelines.stages.featurize import encode
    from pipelines.stages.train import load_model

    paths = load_paths(repo / "params.yaml")
    schema = load_schema(repo / paths.schema_)
    row = read_raw(repo / paths.raw).iloc[[0]]
    record = request_record({name: row[name].iloc[0] for name in schema.features})
    probability = float(load_model(repo / paths.model).predict_proba(encode(row, schema))[0])
    return record, probability


def unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted under ``root`` (an interrupted debootstrap)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def model_and_bento(run: Run) -> dict[str, Any]:
    """The current model (``make run`` when there is none) and ``make bento``'s report."""
    from pipelines.params import load_paths

    if not (run.repo / load_paths(run.repo / "params.yaml").model / "meta.json").exists():
        run.say("model: none yet: `make run`")
        run.run("make", "run", log="make-run")
    run.run("make", "bento", log="make-bento")
    bento: dict[str, Any] = json.loads((run.repo / "reports" / "bento.json").read_text())
    run.say(f"bento: {bento['tag']}, {bento['size_bytes'] / 1e6:.1f} MB with its model")
    return bento


def base(run: Run, bento_tag: str) -> None:
    """Put the image that the bento's Dockerfile starts FROM into buildah's store."""
    import bentoml

    dockerfile = Path(bentoml.get(bento_tag).path) / "env" / "docker" / "Dockerfile"
    name = base_image(dockerfile.read_text())
    cache = Path.home() / ".cache" / "model-image-e2e"  # shared by every model repository
    import_base(run, rootfs_tarball(run, cache), name)
    run.say(f"base: {name} in buildah's store")


def start_registry(run: Run, stack: ExitStack) -> str:
    """Start ``docker-registry`` on a free port of 127.0.0.1; return the image repository."""
    port = free_port()
    config = run.root / "registry.yml"
    config.write_text(registry_config(port, run.root / "registry"))
    log = stack.enter_context((run.logs / "registry.log").open("w"))
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    stack.callback(_stop, registry)
    wait_for(f"http://127.0.0.1:{port}/v2/", 30, lambda: registry.poll() is None)
    run.say(f"registry: serving on 127.0.0.1:{port}")
    return f"127.0.0.1:{port}/{model_name()}"


def push_twice(run: Run) -> str:
    """``make push``; a second push of the same tag must be refused. Return the digest ref."""
    run.run("make", "push", log="make-push")
    report = read_report(run.repo / "reports/image.json", ImageReport, "image")
    reference = check_digest_ref(report.digest_ref or "")
    try:
        run.run("make", "push", log="make-push-again")
    except PipelineError as refused:
        if "already exists" not in str(refused):
            raise
    else:
        raise PipelineError(f"a second push of {report.image} was not refused")
    run.say(f"push: {reference}; pushing the tag again was refused")
    return reference


def check_sbom(run: Run) -> None:
    """``make sbom``; the SBOM must list the serving packages."""
    run.run("make", "sbom", log="make-sbom")
    sbom = json.loads((run.repo / "reports/sbom.spdx.json").read_text())
    names = {p.get("name") for p in sbom.get("packages", [])}
    if not {"xgboost", "bentoml"} <= names:
        raise PipelineError("the SBOM does not list xgboost and bentoml")
    run.say(f"sbom: {len(names)} packages")


def serve(run: Run, stack: ExitStack, reference: str, podman: dict[str, str]) -> None:
    """Run the pulled image with podman; check its user, /readyz and one real /predict."""
    port = free_port()
    started = run.run(
        "podman",
        "run",
        "--detach",
        "--publish",
        f"127.0.0.1:{port}:{CONTAINER_PORT}",
        reference,
        env=podman,
        log="podman",
    )
    container = started.strip().splitlines()[-1]
    stack.callback(
        subprocess.run,
        ["podman", "rm", "--force", "--time", "2", container],
        env={**run.env, **podman},
        capture_output=True,
        check=False,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/readyz", READY_TIMEOUT)
    except PipelineError as error:
        logs = run.run("podman", "logs", container, env=podman, log="podman")
        raise PipelineError(f"{error}; the container's log:\n{logs[-3000:]}") from None
    uid = run.run("podman", "exec", container, "id", "-u", env=podman, log="podman").strip()
    if uid != str(BENTO_UID):
        raise PipelineError(f"the service runs as uid {uid}, not the image's user {BENTO_UID}")
    record, expected = host_prediction(run.repo)
    answer = post_json(f"{url}/predict", {"records": [record]})
    served = float(answer["predictions"][0]["probability"])
    if abs(served - expected) > TOLERANCE:
        raise PipelineError(f"the image predicts {served} where the host model says {expected}")
    run.say(f"serve: uid {uid}; /predict {served:.6f} == host model {expected:.6f}")


def deploy_staging(run: Run, reference: str) -> None:
    """``make set-image`` on a copy of deploy/; the rendered overlay must name the digest."""
    deploy = run.root / "deploy"
    shutil.copytree(run.repo / "deploy", deploy)
    run.run(
        "make",
        "set-image",
        f"DEPLOY={deploy}",
        "OVERLAY=staging",
        f"IMAGE={reference}",
        log="make-set-image",
    )
    overlay = deploy / "overlays" / "staging"
    rendered = run.run("kubectl", "kustomize", str(overlay), log="kubectl")
    if f"image: {reference}" not in rendered:
        raise PipelineError(f"the staging overlay does not render image {reference}")
    run.say(f"manifest: the staging overlay renders image: {reference}")


def end_to_end(run: Run, stack: ExitStack) -> str:
    """Run every step; return the pushed reference by digest."""
    with run.step("tools", "buildah podman skopeo docker-registry debootstrap runc kubectl"):
        ensure_tools(run)
    with run.step("bento", "the current model, make bento"):
        bento = model_and_bento(run)
    with run.step("base", "the Dockerfile's base image, from debootstrap"):
        base(run, bento["tag"])
    with run.step("registry", "docker-registry on 127.0.0.1"):
        repository = start_registry(run, stack)
    with run.step("image", "make image BACKEND=buildah"):
        run.run("make", "image", f"IMAGE_REPO={repository}", "BACKEND=buildah", log="make-image")
        report = read_report(run.repo / "reports/image.json", ImageReport, "image")
        run.say(f"image: {report.image}, {(report.size_bytes or 0) / 1e6:.0f} MB")
    with run.step("push", "make push, then the same tag again"):
        reference = push_twice(run)
    with run.step("sbom", "make sbom (syft, from the registry by digest)"):
        check_sbom(run)
    podman = {
        "CONTAINERS_STORAGE_CONF": str(run.root / "podman-storage.conf"),
        "CONTAINERS_CONF": str(run.root / "containers.conf"),
    }
    with run.step("pull", "podman pull by digest, into a store of its own"):
        run.run("podman", "pull", "--quiet", "--tls-verify=false", reference, env=podman)
    with run.step("serve", "podman run; /readyz; /predict equals the host model"):
        serve(run, stack, reference, podman)
    with run.step("manifest", "make set-image OVERLAY=staging on a copy; kubectl kustomize"):
        deploy_staging(run, reference)
    return reference


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanups, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the whole path, clean up, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)

    repo = Path.cwd()
    root = Path(tempfile.mkdtemp(prefix="image-e2e-"))
    logs = root / "logs"
    logs.mkdir()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = nproc_limit(
        resource.getrlimit(resource.RLIMIT_NPROC)[1],
        int(Path("/proc/sys/kernel/pid_max").read_text()),
    )
    (root / "storage.conf").write_text(storage_conf(root / "buildah"))
    (root / "podman-storage.conf").write_text(storage_conf(root / "podman"))
    (root / "containers.conf").write_text(containers_conf(nofile, nproc))
    (root / "registries.conf").write_text(registries_conf())
    (root / "tmp").mkdir()
    env = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        "TMPDIR": str(root / "tmp"),
    }
    run = Run(root=root, repo=repo, logs=logs, env=env)
    os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]
    reference = ""
    try:
        with ExitStack() as stack:
            reference = end_to_end(run, stack)
    finally:
        print("\n" + timing_table(run.steps), flush=True)
        unmount_under(root)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"image-e2e passed: {reference} built, pushed, pulled, served and deployed to staging")
    return 0


if __name__ == "__main__":
    run_stage(main)
