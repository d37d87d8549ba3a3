"""The model in BentoML's local store, with its lineage (MLflow run, commit, data hash).

Usage: ``python -m pipelines.serving.store import`` saves the current model (``paths.model``)
into the local BentoML model store as ``<register.model_name>:<content hash>`` and prints the
tag; importing the same model again changes nothing. ``--model DIR`` imports another model
directory of the same schema instead (a challenger for shadow scoring), ``--alias ALIAS`` the
version a registry alias names on ``MLFLOW_TRACKING_URI`` (or the local store).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.core.io import PipelineError, run_stage
from pipelines.core.lineage import data_hash, git_state, tracking_uri
from pipelines.core.model import BASELINE, MODEL_ARTIFACT, loaded_files, read_threshold
from pipelines.params import (
    DEFAULT_PARAMS,
    Paths,
    RegisterParams,
    load_paths,
    load_section,
)
from pipelines.serving.scoring import FAIRNESS_FILE, REFERENCE_FILE, SCHEMA_FILE

CARD_FILE = "card.md"  # the model card (pipelines/stages/card.py), stored with the model


@dataclass(frozen=True)
class Sources:
    """The files a served model is made of, as params.yaml names them."""

    model: Path
    schema: Path
    registry: Path
    metrics: Path
    data_dvc: Path
    reference: Path
    card: Path
    fairness: Path
    threshold: float
    name: str

    @classmethod
    def from_params(cls, params: Path = DEFAULT_PARAMS) -> Sources:
        """The current model and its metadata files, from ``params.yaml``."""
        paths: Paths = load_paths(params)
        return cls(
            model=paths.model,
            schema=paths.schema_,
            registry=paths.registry,
            metrics=paths.metrics,
            data_dvc=paths.data_dvc,
            reference=paths.reference,
            card=paths.card,
            fairness=paths.fairness,
            threshold=read_threshold(paths.model),
            name=load_section("register", RegisterParams, params).model_name,
        )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def serving_info(sources: Sources) -> dict[str, Any]:
    """What the served model reports about itself, from files only (no git, no network).

    Keys: ``name``, ``threshold``, ``metrics`` and, when the files exist, ``mlflow_version``,
    ``mlflow_run_id``, ``git_commit`` (the commit MLflow recorded for the run) and ``data_md5``.
    """
    registry = _read_json(sources.registry)
    info: dict[str, Any] = {
        "name": sources.name,
        "threshold": sources.threshold,
        "metrics": _read_json(sources.metrics),
        "mlflow_version": str(registry["version"]) if "version" in registry else None,
        "mlflow_run_id": registry.get("run_id"),
        "git_commit": registry.get("git_commit"),
        "data_md5": data_hash(sources.data_dvc) if sources.data_dvc.exists() else None,
    }
    return info


def model_files(sources: Sources) -> dict[str, Path]:
    """The files stored with the model: model file, ``meta.json``, schema, reference profile, card.

    Every bento thus carries the card of its own model (``GET /card`` serves it), and the
    baseline the service falls back on (``baseline/``, when the model has one).

    Raises:
        PipelineError: There is no model directory, reference profile or model card yet.
    """
    for required in (sources.model / "meta.json", sources.reference, sources.card):
        if not required.exists():
            raise PipelineError(f"{required} does not exist: train a model first (`make run`)")
    audit = json.loads(sources.fairness.read_text()) if sources.fairness.exists() else {}
    fallback = {}
    baseline = sources.model / BASELINE
    if (baseline / "meta.json").exists():
        fallback = {f"{BASELINE}/{name}": baseline / name for name in loaded_files(baseline)}
    return (
        {name: sources.model / name for name in loaded_files(sources.model)}
        | {
            SCHEMA_FILE: sources.schema,
            REFERENCE_FILE: sources.reference,
            CARD_FILE: sources.card,
        }
        | ({FAIRNESS_FILE: sources.fairness} if audit else {})
        | fallback
    )


def model_version(files: Mapping[str, Path], info: Mapping[str, Any]) -> str:
    """A version derived from the content: the same model and metadata give the same version."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    digest.update(json.dumps(info, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def current_tag(sources: Sources) -> str:
    """The BentoML tag of the current model, ``<name>:<content hash>`` (nothing is written)."""
    return f"{sources.name}:{model_version(model_files(sources), serving_info(sources))}"


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    """BentoML metadata has no null: absent values are left out."""
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in document.items()
        if value is not None
    }


def import_model(sources: Sources) -> str:
    """Save the current model into the local BentoML model store; return its tag.

    A no-op when that exact content is already stored. Labels carry the MLflow version and run,
    the git commit and the data hash; metadata adds the threshold, the test metrics and where
    the schema is inside the model directory.
    """
    import shutil

    import bentoml

    files = model_files(sources)
    info = serving_info(sources)
    tag = f"{sources.name}:{model_version(files, info)}"
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        return tag
    # Without an MLflow record, the commit the model is imported from is the best provenance.
    commit = info["git_commit"] or git_state()["git_commit"]
    labels = {
        key: str(value)
        for key, value in {
            "mlflow_version": info["mlflow_version"],
            "mlflow_run_id": info["mlflow_run_id"],
            "git_commit": commit,
            "data_md5": info["data_md5"],
        }.items()
        if value is not None
    }
    metadata = _without_none({**info, "git_commit": commit, "schema": SCHEMA_FILE})
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as stored:
        for name, source in files.items():
            target = Path(stored.path_of(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return tag


def of_directory(sources: Sources, directory: Path) -> Sources:
    """``sources`` with another model directory: its own threshold and, if it has one, record.

    The schema, reference profile and card stay the current model's: another model served
    beside it (a challenger) answers the same requests. The directory's ``registry.json``, when
    there is one, names its registered version (:func:`download_alias` writes it).

    Raises:
        PipelineError: ``directory`` holds no model.
    """
    directory = Path(directory)
    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{directory} holds no model (no meta.json): give a model directory")
    return replace(
        sources,
        model=directory,
        registry=directory / "registry.json",
        metrics=directory / "metrics.json",
        threshold=read_threshold(directory),
    )


def download_alias(name: str, alias: str, into: Path) -> Path:
    """Download the registered version ``models:/<name>@<alias>``; return its model directory.

    The store is ``MLFLOW_TRACKING_URI``'s, or this project's local one. The directory gets a
    ``registry.json`` naming the version and run (:func:`of_directory` reads it).

    Raises:
        PipelineError: no such alias, or a version logged without the model directory.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise PipelineError(
            f"models:/{name}@{alias}: {error.message} (set it with make model-alias)"
        ) from None
    uri = f"models:/{name}/{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    directory = local / "artifacts" / MODEL_ARTIFACT
    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{uri} has no model directory at artifacts/{MODEL_ARTIFACT}")
    record = {"version": int(version.version), "run_id": version.run_id, "model_uri": uri}
    (directory / "registry.json").write_text(json.dumps(record))
    return directory


def main(argv: list[str] | None = None) -> int:
    """``import``: put a model into the BentoML model store and print its tag."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["import"])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="another model directory of the same schema")
    which.add_argument("--alias", help="the registered version this registry alias names")
    args = parser.parse_args(argv)
    # Offline first: BentoML would otherwise report usage over the network.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    sources = Sources.from_params(args.params)
    if args.alias:
        with tempfile.TemporaryDirectory() as into:
            directory = download_alias(sources.name, args.alias, Path(into))
            print(import_model(of_directory(sources, directory)))
        return 0
    print(import_model(of_directory(sources, args.model) if args.model else sources))
    return 0


if __name__ == "__main__":
    run_stage(main)
