"""Asking real registries whether a tag exists, and pushing never over one (servers on 127.0.0.1).

A tag is free only when the registry says so: no login, a closed port or a server error stop
`make image` and `make push` with what the registry said and what to do. skopeo and the docker
CLI are both asked, as either may be the one installed.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.release.image import push_image
from pipelines.release.registry import registry_digest
from pipelines.release.reports import ImageReport
from tests.support.registries import push_manifest
from tools import containers

pytestmark = pytest.mark.slow  # real registries and servers on 127.0.0.1, a few seconds

CLIENTS = ["skopeo", pytest.param("docker", marks=pytest.mark.skipif(
    shutil.which("docker") is None, reason="no docker CLI"
))]  # fmt: skip


@pytest.fixture(scope="module")
def login_registry(
    tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A docker-registry that wants a login: its address and the user:password it created.

    Given an htpasswd path with no file, docker-registry writes one with the user ``docker`` and
    a random password, which it logs: no bcrypt tool is needed.
    """
    root = tmp_path_factory.mktemp("login-registry")
    with containers.local_registry(root, htpasswd=root / "htpasswd") as address:
        log = (root / f"registry-{address.rsplit(':', 1)[1]}.log").read_text()
        found = re.search(r"password=(\S+) user=(\S+)", log)
        assert found, f"docker-registry logged no provisioned user:\n{log}"
        yield address, f"{found.group(2)}:{found.group(1)}"


@pytest.fixture(scope="module")
def failing_server() -> Iterator[str]:
    """A loopback HTTP server that answers 500 to everything, /v2/ included: its address."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"internal error")

        do_HEAD = do_GET  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def docker_login(home: Path, address: str, credentials: str) -> dict[str, str]:
    """What `docker login` leaves behind, in a config of its own: DOCKER_CONFIG for the clients."""
    auth = base64.b64encode(credentials.encode()).decode()
    (home / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(home)}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_tag_is_free_until_pushed_then_its_digest_is_known(
    image_registry: str, client: str
) -> None:
    image = f"{image_registry}/lookup-{client}:v1-abc1234"
    assert registry_digest(image, client) is None
    assert registry_digest(f"{image_registry}/never-pushed:v1", client) is None
    digest = push_manifest(image_registry, f"lookup-{client}", "v1-abc1234")
    assert registry_digest(image, client) == digest


@pytest.mark.parametrize("client", CLIENTS)
def test_a_registry_that_wants_a_login_stops_the_release_until_logged_in(
    login_registry: tuple[str, str],
    client: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, credentials = login_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no credentials at all
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    image = f"{address}/private-{client}:v1-abc1234"
    with pytest.raises(PipelineError) as stopped:
        registry_digest(image, client)
    message = str(stopped.value)
    assert f"cannot tell whether {image} already exists" in message
    assert re.search("unauthorized|no basic auth credentials", message)
    assert f"`docker login {address}`" in message

    for name, value in docker_login(tmp_path, address, credentials).items():
        monkeypatch.setenv(name, value)
    assert registry_digest(image, client) is None
    digest = push_manifest(address, f"private-{client}", "v1-abc1234", credentials)
    assert registry_digest(image, client) == digest


@pytest.mark.parametrize("client", CLIENTS)
def test_a_closed_port_stops_the_release(tools: None, client: str) -> None:
    address = f"127.0.0.1:{containers.free_port()}"
    with pytest.raises(PipelineError) as stopped:
        registry_digest(f"{address}/m:v1-abc1234", client)
    assert "connection refused" in str(stopped.value)
    assert f"check the registry address in IMAGE_REPO ({address})" in str(stopped.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_server_error_stops_the_release(tools: None, failing_server: str, client: str) -> None:
    with pytest.raises(PipelineError, match=f"cannot tell whether {failing_server}/m:v1"):
        registry_digest(f"{failing_server}/m:v1-abc1234", client)
    if client == "skopeo":  # the docker CLI reports its https attempt, not the 500
        with pytest.raises(PipelineError, match=r"status code from registry 500.*try again later"):
            registry_digest(f"{failing_server}/m:v1-abc1234", client)


def report_file(path: Path, image: str, **fields: object) -> Path:
    report = ImageReport(image=image, bento="m:v1", backend="buildah", **fields)  # type: ignore[arg-type]
    path.write_text(report.model_dump_json())
    return path


def test_push_leaves_a_tag_with_the_recorded_digest_and_refuses_any_other(
    image_registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = f"{image_registry}/pushed:v1-abc1234"
    digest = push_manifest(image_registry, "pushed", "v1-abc1234")
    same = report_file(
        tmp_path / "same.json", image, digest_ref=f"{image_registry}/pushed@{digest}"
    )
    before = same.read_text()
    assert push_image(same).digest_ref == f"{image_registry}/pushed@{digest}"
    assert "nothing to push" in capsys.readouterr().out
    assert same.read_text() == before

    other = "sha256:" + "0" * 64
    differs = report_file(
        tmp_path / "other.json", image, digest_ref=f"{image_registry}/pushed@{other}"
    )
    with pytest.raises(PipelineError, match=f"already exists in its registry as {digest}, not as"):
        push_image(differs)
    unpushed = report_file(tmp_path / "built.json", image)  # built here, but the tag is taken
    with pytest.raises(PipelineError, match=r"already exists .* never overwritten"):
        push_image(unpushed)


def test_push_of_a_report_whose_tag_vanished_says_to_build_again(
    image_registry: str, tmp_path: Path
) -> None:
    image = f"{image_registry}/vanished:v1-abc1234"
    digest = "sha256:" + hashlib.sha256(b"gone").hexdigest()
    report = report_file(
        tmp_path / "image.json",
        image,
        digest_ref=f"{image_registry}/vanished@{digest}",
        already_pushed=True,
    )
    with pytest.raises(PipelineError, match="no longer has that tag: run `make image` again"):
        push_image(report)


def test_push_names_the_registry_it_cannot_reach(tools: None, tmp_path: Path) -> None:
    address = f"127.0.0.1:{containers.free_port()}"
    report = report_file(tmp_path / "image.json", f"{address}/m:v1-abc1234")
    with pytest.raises(PipelineError, match=f"asking {address} gave: .*connection refused"):
        push_image(report)
    local = report_file(tmp_path / "local.json", "localhost/m:v1-abc1234")
    with pytest.raises(PipelineError, match="local name, with no registry to push to"):
        push_image(local)
