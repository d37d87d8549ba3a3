"""The merge-to-deploy path on one machine, with no Docker engine and no Docker Hub.

``make image-e2e`` runs what a release does, for real, and checks each result:

1. tools: buildah, podman, skopeo, docker-registry, debootstrap and runc (installed with apt
   when missing and running as root), kubectl;
2. model: the current model (``make run`` first when there is none);
3. bento: ``make bento``;
4. base: the base image that the generated Dockerfile starts ``FROM``, built with debootstrap
   (the root file system is cached in ``~/.cache``, keyed by its package list);
5. registry: a real ``docker-registry`` on 127.0.0.1 (free port, no auth, temporary storage);
6. image: ``make image BACKEND=buildah`` (hadolint, immutable tag); with ``--backend docker``,
   ``make image BACKEND=docker`` through Podman's Docker-compatible API on a socket of its own;
7. push: ``make push``; pushing again does nothing and keeps the digest, and a report whose
   digest differs from the registry's is refused;
8. rerun: the release again: ``make bento`` gives the same bento, ``make image`` builds nothing
   and takes the pushed digest from the registry, ``make push`` does nothing;
9. sbom: ``make sbom`` from the registry, by digest;
10. pull: ``podman pull`` by digest into a store of its own;
11. lean: the pulled image has no compiler, git or GPU package and is under its size target
    (``image_checks``);
12. serve: ``podman run`` locked down as the staging overlay's Deployment runs it (read-only
    root file system, its user, its emptyDirs as the only writable paths, its environment), port
    published on 127.0.0.1; the time from start to ``/readyz``, a refused write to the root file
    system, a ``/predict`` of a row of the real table, whose probability must equal the host
    model's, and the request written to the request log;
13. manifest: ``make set-image OVERLAY=staging DEPLOY=<a copy of deploy/>``, rendered with
    ``kubectl kustomize``, which must name the pushed digest.

Everything it starts (registry, Podman's API service, container, storage, temporary
directories, mounts) is removed at the end, on failure or interruption too, and a table of the
time of each step is printed.

The pieces it shares with other harnesses (the containers configuration of a run, the tools,
the base image, the registry, Podman's Docker API) live in :mod:`tools.containers`.

Usage: ``python -m tools.image_e2e [--backend buildah|docker] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipelines.core.features import encode
from pipelines.core.io import PipelineError, run_stage, write_json
from pipelines.core.model import load_model
from pipelines.params import load_paths
from pipelines.release.reference import check_digest_ref, model_name
from pipelines.release.reports import Backend, BentoReport, ImageReport, read_report
from pipelines.schema import load_schema, read_raw
from pipelines.serving import names
from tools.containers import (
    Run,
    base_image,
    ensure_tools,
    free_port,
    import_base_image,
    local_registry,
    podman_docker_api,
    prepare,
    registries_conf,
    unmount_under,
    wait_for,
)
from tools.image_checks import (
    LISTING,
    SIZES,
    folder_sizes,
    image_problems,
    layer_sizes,
    lockdown,
    parse_listing,
    podman_run_args,
    size_lines,
)

CONTAINER_PORT = 3000
BENTO_UID = 1034
READY_TIMEOUT = 180.0
RESPAWN_TIMEOUT = 90.0  # the arbiter looks every 10 s; the new worker then loads the model
# The API workers' process ids in a container (BentoML runs each as _bentoml_impl.worker...;
# a killed one's cmdline is empty until the arbiter reaps it). [.]: not this shell's own line.
WORKER_PIDS = (
    "for p in /proc/[0-9]*; do tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null "
    "| grep -q '_bentoml_impl[.]worker' && echo \"${p#/proc/}\"; done; true"
)
TOLERANCE = 1e-6


# --- pure core -------------------------------------------------------------------------------


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


def fallbacks_unavailable(metrics: str) -> list[str]:
    """The fallback links the service could not load, from its Prometheus text (/metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sorted(
        sample.labels["link"]
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == names.FALLBACK_UNAVAILABLE and sample.value
    )


# --- the steps -------------------------------------------------------------------------------


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


def http_text(url: str) -> str:
    """The body of a GET of ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return str(response.read().decode())


def host_prediction(repo: Path) -> tuple[dict[str, Any], float]:
    """A row of the real table as a request record, and the host model's probability for it."""
    paths = load_paths(repo / "params.yaml")
    schema = load_schema(repo / paths.schema_)
    row = read_raw(repo / paths.raw).iloc[[0]]
    record = request_record({name: row[name].iloc[0] for name in schema.features})
    probability = float(load_model(repo / paths.model).predict(encode(row, schema))[0])
    return record, probability


def model_and_bento(run: Run) -> dict[str, Any]:
    """The current model (``make run`` when there is none) and ``make bento``'s report."""
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
    import_base_image(run, base_image(dockerfile.read_text()))


def start_registry(run: Run, stack: ExitStack) -> str:
    """Start a local registry for the run, stopped with ``stack``; return its image repository.

    The registry is written into the run's ``registries.conf`` as plain HTTP: start it before
    ``podman_docker_api``, which reads that file when it starts.

    Returns:
        ``127.0.0.1:<port>/<model name>``.
    """
    address = stack.enter_context(local_registry(run.root))
    (run.root / "registries.conf").write_text(registries_conf(insecure=[address]))
    run.say(f"registry: serving on {address}")
    return f"{address}/{model_name()}"


def push_once(run: Run, env: Mapping[str, str]) -> str:
    """``make push``; pushing again keeps the digest, and another digest is refused.

    Args:
        run: The run.
        env: What ``make`` needs besides the run's environment (``DOCKER_HOST``).

    Returns:
        The pushed reference by digest.
    """
    path = run.repo / "reports/image.json"
    run.run("make", "push", env=env, log="make-push")
    report = read_report(path, ImageReport, "image")
    reference = check_digest_ref(report.digest_ref or "")
    again = run.run("make", "push", env=env, log="make-push-again")
    if "nothing to push" not in again or read_report(path, ImageReport, "image") != report:
        raise PipelineError(f"pushing {report.image} again did something:\n{again[-1000:]}")
    other = report.model_copy(update={"digest_ref": reference[:-12] + "0" * 12})
    write_json(path, other.model_dump(mode="json"))
    try:
        run.run("make", "push", env=env, log="make-push-other")
    except PipelineError as refused:
        if "already exists in its registry" not in str(refused):
            raise
    else:
        raise PipelineError(f"a report with another digest for {report.image} was pushed")
    finally:
        write_json(path, report.model_dump(mode="json"))
    run.say(f"push: {reference}; again: nothing to push; another digest: refused")
    return reference


def rerun(run: Run, reference: str, image: Sequence[str], env: Mapping[str, str]) -> None:
    """The release again on the same commit: the same bento, nothing built, nothing pushed.

    Args:
        run: The run.
        reference: The reference by digest that the first push recorded.
        image: ``make image``'s arguments (``IMAGE_REPO=...``, ``BACKEND=...``).
        env: What ``make`` needs besides the run's environment (``DOCKER_HOST``).
    """
    before = read_report(run.repo / "reports/bento.json", BentoReport, "bento")
    rebuilt = run.run("make", "bento", log="make-bento-again")
    bento = read_report(run.repo / "reports/bento.json", BentoReport, "bento")
    if bento.tag != before.tag or "already in the store" not in rebuilt:
        raise PipelineError(f"the same inputs gave bento {bento.tag}, not {before.tag} again")
    said = run.run("make", "image", *image, env=env, log="make-image-again")
    report = read_report(run.repo / "reports/image.json", ImageReport, "image")
    if not report.already_pushed or report.digest_ref != reference or "not built" not in said:
        raise PipelineError(f"`make image` again did not take {reference} from the registry")
    pushed = run.run("make", "push", env=env, log="make-push-rerun")
    if "nothing to push" not in pushed:
        raise PipelineError(f"`make push` of an image already pushed did something:\n{pushed}")
    run.say(f"rerun: bento {bento.tag} again; nothing built, nothing pushed; {reference}")


def check_sbom(run: Run) -> None:
    """``make sbom``; the SBOM must list the serving packages."""
    run.run("make", "sbom", log="make-sbom")
    sbom = json.loads((run.repo / "reports/sbom.spdx.json").read_text())
    names = {p.get("name") for p in sbom.get("packages", [])}
    if not {"xgboost-cpu", "bentoml"} <= names:
        raise PipelineError("the SBOM does not list xgboost-cpu and bentoml")
    run.say(f"sbom: {len(names)} packages")


def check_lean(run: Run, reference: str, podman: dict[str, str]) -> None:
    """The pulled image holds no compiler, git or GPU package and is under its size target.

    Reads the image as pulled (podman's store, ``podman`` its environment): its size, and what
    a container of it lists on PATH and in its Python environment.
    """
    inspected = run.run(
        "podman", "image", "inspect", "--format", "{{.Size}}", reference, env=podman, log="podman"
    )
    size_bytes = int(inspected.strip().splitlines()[-1])

    def shell(command: str) -> str:
        return run.run(
            "podman", "run", "--rm", "--entrypoint", "/bin/sh", reference, "-c", command,
            env=podman, log="podman",
        )  # fmt: skip

    programs, distributions = parse_listing(shell(LISTING))
    history = run.run("podman", "history", "--format", "json", reference, env=podman, log="podman")
    for line in size_lines(layer_sizes(history), folder_sizes(shell(SIZES))):
        run.say(f"lean: {line}")
    problems = image_problems(programs, distributions, size_bytes)
    if problems:
        raise PipelineError(f"the image is not lean: {'; '.join(problems)}")
    run.say(
        f"lean: {(size_bytes or 0) / 1e6:.0f} MB, {len(programs)} programs on PATH and "
        f"{len(distributions)} Python packages: no compiler, git or GPU package"
    )


def serve(run: Run, stack: ExitStack, reference: str, podman: dict[str, str]) -> None:
    """Run the pulled image locked down as the Deployment runs it; check it serves.

    The staging overlay is rendered and its container's settings applied: read-only root file
    system, its user, its emptyDir paths as the only writable ones, its environment (every
    request logged, to see the request log written). Checks the time from start to /readyz,
    the user, that the root file system refuses writes, one real /predict, that every fallback
    loaded (``model_fallback_unavailable`` 0: the image lacks no library they need), the request
    log;
    then that a killed API worker is replaced (:func:`check_respawn`) and /predict still answers.
    """
    rendered = run.run("kubectl", "kustomize", str(run.repo / "deploy/overlays/staging"))
    lock = lockdown(rendered)
    port = free_port()
    begun = time.monotonic()
    started = run.run(
        "podman",
        "run",
        "--detach",
        *podman_run_args(lock, {"MODEL_REQUEST_LOG_RATE": "1"}),
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
        wait_for(f"{url}/readyz", READY_TIMEOUT, poll=0.1)
    except PipelineError as error:
        logs = run.run("podman", "logs", container, env=podman, log="podman")
        raise PipelineError(f"{error}; the container's log:\n{logs[-3000:]}") from None
    ready = time.monotonic() - begun
    uid = run.run("podman", "exec", container, "id", "-u", env=podman, log="podman").strip()
    if uid != str(BENTO_UID):
        raise PipelineError(f"the service runs as uid {uid}, not the image's user {BENTO_UID}")
    touched = subprocess.run(
        ["podman", "exec", container, "touch", "/home/bentoml/written"],
        env={**run.env, **podman},
        capture_output=True,
        check=False,
    )
    if touched.returncode == 0:
        raise PipelineError("the container could write to its root file system")
    record, expected = host_prediction(run.repo)
    answer = post_json(f"{url}/predict", {"records": [record]})
    served = float(answer["predictions"][0]["probability"])
    if abs(served - expected) > TOLERANCE:
        raise PipelineError(f"the image predicts {served} where the host model says {expected}")
    unloadable = fallbacks_unavailable(http_text(f"{url}/metrics"))
    if unloadable:
        raise PipelineError(f"the image's fallback {', '.join(unloadable)} could not be loaded")
    request_log = lock.env.get("MODEL_REQUEST_LOG_DIR")
    if request_log:
        found = run.run("podman", "exec", container, "find", request_log, "-type", "f", env=podman)
        if not found.strip():
            raise PipelineError(f"the request was not logged under {request_log}")
    run.say(
        f"serve: read-only root, writable only {', '.join(lock.writable)}; uid {uid}; "
        f"start to ready {ready:.1f} s; /predict {served:.6f} == host model {expected:.6f}"
    )
    respawned = check_respawn(run, container, podman)
    answer = post_json(f"{url}/predict", {"records": [record]})
    if abs(float(answer["predictions"][0]["probability"]) - expected) > TOLERANCE:
        raise PipelineError("after a worker was replaced, the image predicts another probability")
    run.say(f"serve: a killed API worker was replaced in {respawned:.1f} s; /predict answers")


def check_respawn(run: Run, container: str, podman: dict[str, str]) -> float:
    """SIGKILL one API worker in ``container``; the seconds until the arbiter replaced it.

    The pod must not serve on at part capacity (BentoML's own image turns respawn off).

    Raises:
        PipelineError: No worker was found, or none replaced the killed one in time.
    """

    def workers() -> set[str]:
        listed = run.run("podman", "exec", container, "sh", "-c", WORKER_PIDS, env=podman)
        return {line.strip() for line in listed.splitlines() if line.strip().isdigit()}

    before = workers()
    if not before:
        raise PipelineError("no BentoML API worker process runs in the container")
    victim = min(before, key=int)
    killed = time.monotonic()
    run.run("podman", "exec", container, "sh", "-c", f"kill -9 {victim}", env=podman)
    while time.monotonic() - killed < RESPAWN_TIMEOUT:
        now = workers()
        if victim not in now and len(now) == len(before):
            return time.monotonic() - killed
        time.sleep(0.5)
    raise PipelineError(
        f"worker {victim} was killed and not replaced within {RESPAWN_TIMEOUT:.0f} s "
        f"(workers now: {sorted(workers())} of {len(before)})"
    )


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


def end_to_end(run: Run, stack: ExitStack, backend: Backend = "buildah") -> str:
    """Run every step, building with ``backend``; return the pushed reference by digest."""
    with run.step("tools", "buildah podman skopeo docker-registry debootstrap runc kubectl"):
        ensure_tools(run)
    with run.step("bento", "the current model, make bento"):
        bento = model_and_bento(run)
    with run.step("base", "the Dockerfile's base image, from debootstrap"):
        base(run, bento["tag"])
    with run.step("registry", "docker-registry on 127.0.0.1"):
        repository = start_registry(run, stack)
    docker: dict[str, str] = {}
    if backend == "docker":
        with run.step("docker", "podman system service: a Docker API on buildah's store"):
            docker = stack.enter_context(podman_docker_api(run))
    image = [f"IMAGE_REPO={repository}", f"BACKEND={backend}"]
    with run.step("image", f"make image BACKEND={backend}"):
        run.run("make", "image", *image, env=docker, log="make-image")
        report = read_report(run.repo / "reports/image.json", ImageReport, "image")
        run.say(f"image: {report.image}, {(report.size_bytes or 0) / 1e6:.0f} MB")
    with run.step("push", "make push; again: nothing to push; another digest: refused"):
        reference = push_once(run, docker)
    with run.step("rerun", "make bento, image, push again: same bento, no build, no push"):
        rerun(run, reference, image, docker)
    with run.step("sbom", "make sbom (syft, from the registry by digest)"):
        check_sbom(run)
    with run.step("pull", "podman pull by digest, into a store of its own"):
        run.run("podman", "pull", "--quiet", "--tls-verify=false", reference, env=run.podman)
    with run.step("lean", "no compiler, git or GPU package in the image; under its size target"):
        check_lean(run, reference, run.podman)
    with run.step("serve", "podman run locked down as the Deployment; /readyz; /predict"):
        serve(run, stack, reference, run.podman)
    with run.step("manifest", "make set-image OVERLAY=staging on a copy; kubectl kustomize"):
        deploy_staging(run, reference)
    return reference


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanups, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the whole path, clean up, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["buildah", "docker"],
        default="buildah",
        help="build with buildah, or with docker through Podman's Docker API (default: buildah)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)

    root = Path(tempfile.mkdtemp(prefix="image-e2e-"))
    run = prepare(root, Path.cwd(), "overlay" if args.backend == "docker" else "vfs")
    os.environ["BENTOML_HOME"] = run.env["BENTOML_HOME"]  # base() reads the store in-process
    reference = ""
    try:
        with ExitStack() as stack:
            reference = end_to_end(run, stack, args.backend)
    finally:
        print("\n" + timing_table(run.steps), flush=True)
        unmount_under(root)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"image-e2e passed ({args.backend}): {reference} built, pushed, pulled, served and "
        "deployed to staging"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
