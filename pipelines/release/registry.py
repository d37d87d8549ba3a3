"""What a registry says about a tag: present, absent, or unknown, and how to read its refusals.

Only a definite "not found" lets a tag be pushed: a registry that cannot say (unreachable, no
credentials, a server error) stops the release with advice on what to fix.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from pipelines.core.io import PipelineError
from pipelines.release.reference import file_digest, is_loopback, registry_host

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
