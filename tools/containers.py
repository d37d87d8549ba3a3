"""Building, pushing and running images on a machine without a Docker engine or Docker Hub.

What ``make image-e2e`` (:mod:`tools.image_e2e`) and the act release scenario
(:mod:`tools.act.simulation`) stand on, with Debian's buildah, podman, skopeo, docker-registry,
debootstrap and runc:

- ``prepare``: a run's containers configuration (buildah's store, Podman's own store,
  containers.conf with runc and the host's limits, registries.conf) and the environment that
  points every tool at it; ``ensure_tools`` installs the missing ones with apt;
- ``import_base_image``: the image a Dockerfile starts ``FROM`` (``base_image``), which cannot be
  pulled here, as a minimal Debian with Python from debootstrap, left as slim as Debian's slim
  images (``slimify``) and cached in ``~/.cache`` by what it is built from (``rootfs_key``);
- ``local_registry``: a real ``docker-registry`` on a free port of 127.0.0.1, a login optional;
- ``podman_docker_api``: Podman's Docker-compatible API on a socket of its own, on buildah's
  store, for docker clients;
- ``unmount_under``: what an interrupted debootstrap left mounted.

Whatever a block starts is stopped by its own process id when the block ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.io import PipelineError

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
# What Debian's slim images leave out (debuerreotype's --slimify, which builds debian:*-slim and
# so python:*-slim): documentation, manuals and translations, keeping each package's copyright
# and the locale alias table. Without it the stand-in base is 42 MB heavier than the real one.
SLIM_EXCLUDES = (
    "usr/share/doc",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/man",
    "usr/share/lintian",
    "usr/share/linda",
)
SLIM_KEEPS = ("usr/share/doc/*/copyright", "usr/share/locale/locale.alias")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOG_TAIL = 40
# Under the home directory: the base image's root file system, shared by every model repository.
CACHE = Path(".cache") / "model-image-e2e"


# --- pure core -------------------------------------------------------------------------------


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """Debian packages whose commands are not on PATH."""
    return sorted({package for command, package in APT_TOOLS.items() if which(command) is None})


def storage_conf(root: Path, driver: str = "vfs") -> str:
    """A containers-storage config keeping every layer under ``root``.

    Args:
        root: Where the store lives.
        driver: ``vfs`` needs no kernel mounts but copies the whole file system for each layer;
            ``overlay`` (root and a kernel with overlayfs) shares them.
    """
    return f'[storage]\ndriver = "{driver}"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'


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


def registries_conf(insecure: Sequence[str] = ()) -> str:
    """Short names (the Dockerfile's ``FROM python:...``) resolve as Docker Hub's, never asked.

    Args:
        insecure: Registries (``host:port``) reached over plain HTTP, like the local one: Podman
            (and so ``docker push`` through its API) otherwise insists on TLS.
    """
    text = 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'
    for location in insecure:
        text += f'\n[[registry]]\nlocation = "{location}"\ninsecure = true\n'
    return text


def registry_config(port: int, storage: Path, htpasswd: Path | None = None) -> str:
    """A ``docker-registry`` config: 127.0.0.1 only, storage in ``storage``.

    Args:
        port: The port to listen on.
        storage: Where the registry keeps its blobs.
        htpasswd: With a path, clients must log in (basic auth, bcrypt entries); a missing file
            is created by the registry with a user ``docker`` whose password it logs.
    """
    auth = f"auth:\n  htpasswd:\n    realm: local\n    path: {htpasswd}\n" if htpasswd else ""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth}"
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
    text = json.dumps(
        {"suite": suite, "packages": sorted(packages), "mirror": mirror, "slim": SLIM_EXCLUDES}
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def slimify(rootfs: Path) -> int:
    """Remove what Debian's slim images leave out (``SLIM_EXCLUDES`` but ``SLIM_KEEPS``).

    Returns:
        The bytes removed.
    """
    keep = {path for pattern in SLIM_KEEPS for path in rootfs.glob(pattern)}
    removed = 0
    for folder in map(rootfs.joinpath, SLIM_EXCLUDES):
        if not folder.is_dir():
            continue
        for path in [*sorted(folder.rglob("*"), reverse=True), folder]:  # contents first
            if path in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):  # a folder that holds something kept stays
                    path.rmdir()
            else:
                removed += path.lstat().st_size
                path.unlink()
    return removed


def nproc_limit(hard: int, pid_max: int) -> int:
    """The process limit to ask podman for: conmon itself runs with at most ``pid_max``."""
    return pid_max if hard in (resource.RLIM_INFINITY, -1) else min(hard, pid_max)


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

    @property
    def podman(self) -> dict[str, str]:
        """What ``podman pull`` and ``run`` add to ``env``: a store of their own, runc, limits."""
        return {
            "CONTAINERS_STORAGE_CONF": str(self.root / "podman-storage.conf"),
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
        }

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


def prepare(root: Path, repo: Path, driver: str = "vfs") -> Run:
    """A run in ``root`` (which must exist) for the project in ``repo``: configs and environment.

    Writes the containers configuration (buildah's store, Podman's own store, containers.conf
    with runc and the host's limits, registries.conf) and returns a run whose ``env`` points
    every tool at it, with BentoML's home in ``root`` too. Logs go to ``root/logs``.

    Args:
        root: The run's directory.
        repo: The project.
        driver: The storage driver of both stores. A ``docker build`` commits a layer per
            instruction, which ``vfs`` copies in full (over 30 GB for a bento's image, and as
            much again to pull it): use ``overlay`` with ``podman_docker_api``.
    """
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = nproc_limit(
        resource.getrlimit(resource.RLIMIT_NPROC)[1],
        int(Path("/proc/sys/kernel/pid_max").read_text()),
    )
    (root / "storage.conf").write_text(storage_conf(root / "buildah", driver))
    (root / "podman-storage.conf").write_text(storage_conf(root / "podman", driver))
    (root / "containers.conf").write_text(containers_conf(nofile, nproc))
    (root / "registries.conf").write_text(registries_conf())
    (root / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        "TMPDIR": str(root / "tmp"),
    }
    return Run(root=root, repo=repo, logs=logs, env=env)


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
    removed = slimify(rootfs)
    run.say(f"base: {removed / 1e6:.0f} MB of documentation and translations left out, as slim")
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


def import_base_image(run: Run, name: str, cache: Path | None = None) -> None:
    """Put a minimal Debian with Python into buildah's store as ``name`` (a Dockerfile's FROM).

    Podman's Docker API (``podman_docker_api``) reads the same store, so a ``docker build``
    through it finds the image too. The root file system is cached in ``cache`` (default
    ``~/.cache/model-image-e2e``).
    """
    import_base(run, rootfs_tarball(run, cache or Path.home() / CACHE), name)
    run.say(f"base: {name} in buildah's store")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    url: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    statuses: tuple[int, ...] = (200,),
    poll: float = 0.5,
) -> None:
    """Wait until ``url`` answers with one of ``statuses``, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own URL)
                if response.status in statuses:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            if error.code in statuses:
                return
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(poll)
    raise PipelineError(f"{url} did not answer {statuses} within {timeout:.0f}s ({last})")


def unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted under ``root`` (an interrupted debootstrap)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextmanager
def local_registry(root: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """Run ``docker-registry`` on a free port of 127.0.0.1 with its files under ``root``.

    Args:
        root: A directory for its config, storage and log (``registry-<port>.*``).
        htpasswd: Require a login (see ``registry_config``).

    Yields:
        Its address, ``127.0.0.1:<port>``; it is stopped by its process id when the block ends.
    """
    port = free_port()
    config = root / f"registry-{port}.yml"
    config.write_text(registry_config(port, root / f"registry-{port}", htpasswd))
    with (root / f"registry-{port}.log").open("a") as log:
        registry = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # With a login required, /v2/ answers 401 as soon as the registry listens.
            wait_for(
                f"http://127.0.0.1:{port}/v2/", 30, lambda: registry.poll() is None, (200, 401)
            )
            yield f"127.0.0.1:{port}"
        finally:
            _stop(registry)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def docker_api_answers(path: Path) -> bool:
    """Whether a Docker API answers ``GET /_ping`` with 200 on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(path))
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return client.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


@contextmanager
def podman_docker_api(run: Run) -> Iterator[dict[str, str]]:
    """Serve Podman's Docker-compatible API on a socket of its own, for docker clients.

    ``podman system service`` runs with the run's containers configuration: buildah's store
    (where ``import_base_image`` put the base image), ``containers.conf`` (runc, limits the host
    allows) and ``registries.conf`` (the local registry over plain HTTP: start it first). The
    docker CLI builds through it without BuildKit (``make image`` sees Podman and says so).

    Yields:
        The environment for docker clients, ``{"DOCKER_HOST": "unix://<socket>"}``. The service
        is stopped by its own process id when the block ends, and its socket removed.
    """
    folder = Path(tempfile.mkdtemp(prefix="podman-api-"))  # a socket path has at most 107 bytes
    sock = folder / "docker.sock"
    log_path = run.logs / "podman-service.log"
    env = {**run.env, "CONTAINERS_CONF": str(run.root / "containers.conf")}
    try:
        with log_path.open("a") as log:
            service = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{sock}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 30
                while not docker_api_answers(sock):
                    if service.poll() is not None or time.monotonic() > deadline:
                        raise PipelineError(
                            f"podman system service does not answer on {sock}: see {log_path}"
                        )
                    time.sleep(0.2)
                run.say(f"docker API: podman system service on unix://{sock}")
                yield {"DOCKER_HOST": f"unix://{sock}"}
            finally:
                _stop(service)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
