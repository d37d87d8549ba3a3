"""The pure parts of tools/containers: configs, the base image's name and root file system."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from pipelines.core.io import PipelineError
from tools import containers


def test_missing_tools_are_named_by_debian_package() -> None:
    present = {"buildah", "podman", "runc"}
    missing = containers.missing_tools(lambda c: f"/usr/bin/{c}" if c in present else None)
    assert missing == ["debootstrap", "docker-registry", "skopeo"]
    assert containers.missing_tools(lambda c: f"/usr/bin/{c}") == []


@pytest.mark.parametrize(
    ("dockerfile", "name"),
    [
        (
            "# x\nFROM python:3.11-slim AS base-container\nRUN true\n",
            "docker.io/library/python:3.11-slim",
        ),
        ("FROM --platform=linux/amd64 bitnami/python:3.11\n", "docker.io/bitnami/python:3.11"),
        ("FROM ghcr.io/o/base:1\nFROM python:3\n", "ghcr.io/o/base:1"),
        ("from localhost/base:1\n", "localhost/base:1"),
    ],
)
def test_base_image_is_the_first_from_fully_qualified(dockerfile: str, name: str) -> None:
    assert containers.base_image(dockerfile) == name


def test_a_dockerfile_without_from_is_an_error() -> None:
    with pytest.raises(PipelineError, match="no FROM"):
        containers.base_image("RUN true\n")


def test_configs_parse_and_keep_state_where_told(tmp_path) -> None:
    storage = tomllib.loads(containers.storage_conf(tmp_path))["storage"]
    assert storage == {
        "driver": "vfs",
        "runroot": f"{tmp_path}/run",
        "graphroot": f"{tmp_path}/graph",
    }
    conf = tomllib.loads(containers.containers_conf(20000, 32768))
    assert conf["containers"]["default_ulimits"] == [
        "nofile=20000:20000",
        "nproc=32768:32768",
    ]
    assert conf["engine"]["runtime"] == "runc"
    assert tomllib.loads(containers.registries_conf())["unqualified-search-registries"] == [
        "docker.io"
    ]
    registry = yaml.safe_load(containers.registry_config(5123, tmp_path / "r"))
    assert registry["http"] == {"addr": "127.0.0.1:5123"}
    assert registry["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "r")
    assert "auth" not in registry


def test_a_registry_can_require_a_login(tmp_path) -> None:
    config = yaml.safe_load(containers.registry_config(5123, tmp_path, tmp_path / "htpasswd"))
    assert config["auth"] == {"htpasswd": {"realm": "local", "path": str(tmp_path / "htpasswd")}}


def test_the_local_registries_go_over_plain_http_for_podman(tmp_path) -> None:
    config = tomllib.loads(containers.registries_conf(["127.0.0.1:5123", "localhost:5000"]))
    assert config["registry"] == [
        {"location": "127.0.0.1:5123", "insecure": True},
        {"location": "localhost:5000", "insecure": True},
    ]
    assert config["short-name-mode"] == "permissive"
    assert "registry" not in tomllib.loads(containers.registries_conf())


def test_the_store_can_share_layers_with_overlay(tmp_path) -> None:
    assert tomllib.loads(containers.storage_conf(tmp_path, "overlay"))["storage"]["driver"] == (
        "overlay"
    )


def test_process_limit_stays_under_conmons() -> None:
    assert containers.nproc_limit(96365, 32768) == 32768
    assert containers.nproc_limit(4096, 32768) == 4096
    assert containers.nproc_limit(-1, 32768) == 32768


def test_rootfs_cache_key_follows_what_it_is_built_from() -> None:
    key = containers.rootfs_key("bookworm", ("python3", "ca-certificates"), "http://m")
    assert key == containers.rootfs_key("bookworm", ("ca-certificates", "python3"), "http://m")
    assert key != containers.rootfs_key("bookworm", ("python3",), "http://m")
    assert key != containers.rootfs_key("trixie", ("python3", "ca-certificates"), "http://m")


def test_slimify_leaves_out_what_debian_slim_does_and_keeps_copyrights(tmp_path) -> None:
    files = {
        "usr/share/doc/python3/copyright": 10,
        "usr/share/doc/python3/changelog.gz": 1000,
        "usr/share/man/man1/python3.1.gz": 200,
        "usr/share/locale/de/LC_MESSAGES/apt.mo": 300,
        "usr/share/locale/locale.alias": 5,
        "usr/share/info/dir": 40,
        "usr/share/zoneinfo/UTC": 7,
        "usr/lib/python3.11/os.py": 50,
    }
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "usr/share/doc/libc6").mkdir()
    (tmp_path / "usr/share/doc/python3.11").symlink_to("python3")

    assert containers.slimify(tmp_path) == 1000 + 200 + 300 + 40 + len("python3")
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    assert left == [
        "usr/lib/python3.11/os.py",
        "usr/share/doc/python3/copyright",
        "usr/share/locale/locale.alias",
        "usr/share/zoneinfo/UTC",
    ]
    assert not (tmp_path / "usr/share/man").exists()
    assert not (tmp_path / "usr/share/doc/libc6").exists()
