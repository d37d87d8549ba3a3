"""Helpers of the release tests: put an image into a registry without any image tool."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import urllib.request

from pipelines.release.reference import file_digest


def push_manifest(
    address: str,
    repository: str,
    tag: str,
    auth: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Push a one-file image (with ``labels``) with the registry's HTTP API; return its digest."""
    headers = {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"} if auth else {}
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as archive:
        data = f"{repository}:{tag}\n".encode()
        member = tarfile.TarInfo("hello.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    layer = layer_tar.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [file_digest(layer)]},
            "config": {"Labels": labels} if labels else {},
        }
    ).encode()

    def request(method: str, url: str, body: bytes = b"", kind: str = "") -> str:
        sent = urllib.request.Request(
            f"http://{address}{url}",
            data=body if method != "POST" else None,
            method=method,
            headers=headers | ({"Content-Type": kind} if kind else {}),
        )
        with urllib.request.urlopen(sent, timeout=10) as answer:  # noqa: S310
            return str(answer.headers.get("Location", ""))

    for blob in (layer, config):
        location = request("POST", f"/v2/{repository}/blobs/uploads/")
        separator = "&" if "?" in location else "?"
        path = location.removeprefix(f"http://{address}")
        # A form content type (urllib's default) would make the registry parse the blob as a form
        digest = file_digest(blob)
        request("PUT", f"{path}{separator}digest={digest}", blob, "application/octet-stream")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": file_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": file_digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    kind = "application/vnd.oci.image.manifest.v1+json"
    request("PUT", f"/v2/{repository}/manifests/{tag}", manifest, kind)
    return file_digest(manifest)
