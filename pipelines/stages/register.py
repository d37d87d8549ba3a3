"""Register stage: log the trained and evaluated model to MLflow and register a new version.

One MLflow run per pipeline run that trained a model: params, train and test metrics, the model,
the data hash from the ``.dvc`` file, the git commit, the schema and the plot data. The store
defaults to a local sqlite file (offline); ``MLFLOW_TRACKING_URI`` points it elsewhere.

The registered model stands on its own: it takes raw rows (the schema's feature columns) and
returns the model's prediction, by task: a binary classifier's positive-class probability, a
regression's value and interval, a multiclass classifier's label and probability per class
(:mod:`pipelines.serving.mlflow_model`, logged as code
with the model directory and the schema as artifacts; nothing is pickled). Its signature comes
from the schema and its input example is raw test rows, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` score a raw record as the service does.

Usage: ``python -m pipelines.stages.register --model DIR --test FEATURES --raw TABLE
--metrics JSON --data-dvc FILE --schema SCHEMA --plots DIR --store DIR --out JSON``
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pipelines
from pipelines.core import linear
from pipelines.core.features import read_features
from pipelines.core.io import path_arguments, run_stage, write_json
from pipelines.core.lineage import data_hash, git_state, run_url, tracking_uri
from pipelines.core.metrics import PROBABILITY
from pipelines.core.model import MODEL_ARTIFACT, SCHEMA_ARTIFACT, LoadedModel, load_model
from pipelines.params import (
    FeaturizeParams,
    RegisterParams,
    TrainParams,
    load_paths,
    load_section,
)
from pipelines.schema import Feature, Schema, Target, load_schema, read_raw

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature

INPUT_EXAMPLE_ROWS = 5
# The registered model's code (MLflow runs the file; the package does not import it)
PYFUNC = str(Path(pipelines.__file__).parent / "serving" / "mlflow_model.py")


def run_params(train: TrainParams, featurize: FeaturizeParams) -> dict[str, Any]:
    """The params that shaped this model, flat, as MLflow wants them."""
    # the chosen model's own section (the dummy has none); unset options are not params
    chosen = train.model_dump(exclude_none=True).get(train.model, {})
    return {
        "model": train.model,
        "seed": train.seed,
        "cv_folds": train.cv_folds,
        **{f"{train.model}.{k}": v for k, v in chosen.items()},
        "test_size": featurize.test_size,
        "split_seed": featurize.seed,
        "threshold": train.threshold,  # `value`: tuned (metrics.json's threshold is the result)
    }


def pip_requirements(loaded: LoadedModel) -> list[str]:
    """Pinned requirements of the logged model (given, so MLflow need not infer them slowly).

    What :mod:`pipelines.serving.mlflow_model` imports to check, encode and score raw rows, and
    what :func:`~pipelines.core.model.load_model` needed to read ``loaded``: XGBoost for trees;
    NumPy alone for a linear model's numbers; scikit-learn and skops for any other pipeline.
    """
    from importlib.metadata import version

    packages = ["numpy", "pandas", "pydantic", "pyyaml", "treelite"]
    if loaded.meta["kind"] == "xgboost":
        packages.append("xgboost-cpu")  # the same `xgboost` import, without the CUDA libraries
    elif not isinstance(loaded.model, linear.Linear):
        packages += ["scikit-learn", "skops"]
    return [f"{p}=={version(p)}" for p in packages]


def column_type(feature: Feature) -> str:
    """The MLflow type of a raw column, as ``read_raw`` reads it.

    MLflow converts no int64 column to double, and pandas reads an integer column with a missing
    value as floats: an integer feature is ``long``, or ``double`` where it may be missing.
    """
    if feature.type == "category":
        return "string"
    return "long" if feature.type == "integer" and not feature.nullable else "double"


def output_columns(target: Target) -> Sequence[tuple[str, str | None]]:
    """The MLflow type and name of each column the registered model answers, by task.

    Binary: one unnamed probability; regression: ``prediction``, ``low``, ``high``; multiclass:
    ``label`` and ``probability_<class>`` per class (the batch scorer's columns).
    """
    if target.task == "regression":
        return [("double", "prediction"), ("double", "low"), ("double", "high")]
    if target.task == "multiclass":
        kind = "long" if all(isinstance(c, int) for c in target.labels) else "string"
        return [(kind, "label")] + [("double", f"{PROBABILITY}{c}") for c in target.labels]
    return [("double", None)]


def raw_signature(schema: Schema) -> ModelSignature:
    """The registered model's signature: the schema's feature columns in, the task's out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec
    from mlflow.types import Schema as Columns

    inputs = Columns([ColSpec(column_type(f), name) for name, f in schema.features.items()])
    outputs = Columns([ColSpec(kind, name) for kind, name in output_columns(schema.target)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def raw_example(raw: pd.DataFrame, schema: Schema, ids: Sequence[Any]) -> pd.DataFrame:
    """The raw rows of ``ids`` (test rows), feature columns only, typed as the signature says."""
    rows = raw.set_index(schema.id).loc[list(ids), list(schema.features)].reset_index(drop=True)
    types = {"long": "int64", "double": "float64", "string": "object"}
    return rows.astype({n: types[column_type(f)] for n, f in schema.features.items()})


def use_experiment(store: Path, experiment: str) -> str:
    """Point MLflow at the tracking store (:func:`tracking_uri`) and ``experiment``, made if new.

    Returns:
        The tracking URI.
    """
    import mlflow

    uri = tracking_uri(store)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        store.mkdir(parents=True, exist_ok=True)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = None
        if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the cwd
            artifacts = (store / "artifacts").resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return uri


def main(argv: list[str] | None = None) -> int:
    """Log the run to MLflow, register the model, write the registry record."""
    names = ("model", "test", "raw", "metrics", "data-dvc", "schema", "plots", "store", "out")
    args = path_arguments(__doc__.splitlines()[0], names, argv)
    params = load_section("register", RegisterParams)
    train = load_section("train", TrainParams)

    import mlflow

    loaded = load_model(args.model)
    schema = load_schema(args.schema)
    _, _, ids = read_features(args.test)
    example = raw_example(read_raw(args.raw), schema, list(ids[:INPUT_EXAMPLE_ROWS]))
    metrics = {
        k: v for k, v in json.loads(args.metrics.read_text()).items() if isinstance(v, float)
    }

    uri = use_experiment(args.store, params.experiment)

    # What the stages before this one wrote is the run itself, not an uncommitted change
    paths = load_paths()
    written = ("dvc.lock", args.metrics, paths.segments, paths.fairness, args.plots)
    tags = {"data_md5": data_hash(args.data_dvc), **git_state(written)}
    run_name = f"{loaded.meta['kind']}@{tags['git_commit'][:8]}"
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        featurize = load_section("featurize", FeaturizeParams)
        mlflow.log_params(run_params(train, featurize))
        mlflow.log_metrics(metrics | loaded.meta.get("cv", {}))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PYFUNC,
            artifacts={MODEL_ARTIFACT: str(args.model), SCHEMA_ARTIFACT: str(args.schema)},
            code_paths=[str(Path(pipelines.__file__).parent)],
            signature=raw_signature(schema),
            input_example=example,
            registered_model_name=params.model_name,
            pip_requirements=pip_requirements(loaded),
        )
        mlflow.log_artifact(str(args.schema))
        mlflow.log_artifacts(str(args.plots), artifact_path="plots")

    record = {
        "model_name": params.model_name,
        "version": int(info.registered_model_version),
        "model_uri": f"models:/{params.model_name}/{info.registered_model_version}",
        "run_id": run.info.run_id,
        "experiment": params.experiment,
        **tags,
    }
    if url := run_url(uri, run.info.experiment_id, run.info.run_id):
        record["run_url"] = url  # the pull-request comment links the run on the team's server
    write_json(args.out, record)
    print(f"MLflow run {run.info.run_id}: registered {record['model_uri']} in {uri}")
    return 0


if __name__ == "__main__":
    run_stage(main)
