"""``make tune``: search train's params on the training rows; write the best into params.yaml.

Reads ``tune:`` (trials, timeout, seed, folds, space), the featurize stage's training rows and
the gate's first metric of the model's task (``value_per_1000`` when it comes first and params
state a value model: trials are then scored by what their decisions earn); runs the study
(:mod:`pipelines.tuning.search`) with a line per trial on the terminal and an MLflow child run
per trial under one parent run; writes the best trial's params into params.yaml's ``train:``
(comments and layout kept) when they beat the current ones, then ``reports/tune.json`` and
``reports/tune.md`` (:mod:`pipelines.tuning.report`). A time limit stops the study after the
running trial, and the best so far is written.

Usage: ``python -m pipelines.tuning.tune --markdown MD --json JSON [--trials N] [--timeout S]``
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.features import read_features
from pipelines.core.formatting import number
from pipelines.core.io import PipelineError, run_stage, write_atomically, write_json
from pipelines.core.lineage import git_state
from pipelines.core.metrics import VALUE
from pipelines.core.model import check_kind
from pipelines.core.value import ValueModel, value_model
from pipelines.params import (
    DEFAULT_PARAMS,
    EngineParams,
    GateParams,
    Paths,
    RegisterParams,
    TrainParams,
    TuneParams,
    ValueParams,
    load_optional,
    load_paths,
    load_section,
)
from pipelines.schema import Schema, load_schema
from pipelines.stages.register import use_experiment
from pipelines.stages.train import amount_of
from pipelines.tuning import parallel, report, search

if TYPE_CHECKING:
    import optuna


def write_train_params(path: Path, values: dict[str, Any]) -> None:
    """Set ``train.<path>`` for each value in the params file, keeping comments and layout.

    Raises:
        PipelineError: A value's key is not in the file's train: section.
    """
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 100

    def null(representer: Any, _: None) -> Any:  # as the file writes it, not as an empty value
        return representer.represent_scalar("tag:yaml.org,2002:null", "null")

    def real(representer: Any, value: float) -> Any:  # 1.0e-05: YAML 1.1 readers need the dot
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    rt.representer.add_representer(type(None), null)
    rt.representer.add_representer(float, real)
    document = rt.load(path.read_text())
    for name, value in values.items():
        section, key = name.split(".", 1)
        node = document["train"].get(section)
        if node is None or key not in node:
            raise PipelineError(f"{path}: train.{name} is not there to be set")
        node[key] = value
    stream = io.StringIO()
    rt.dump(document, stream)
    write_atomically(path, lambda partial: partial.write_text(stream.getvalue()))


class Progress:
    """A line on the terminal per trial: its score, the best so far, the time left."""

    def __init__(self, trials: int, timeout: float | None, metric: str) -> None:
        """Count from now."""
        self.trials, self.timeout, self.metric = trials, timeout, metric
        self.started = time.monotonic()

    def __call__(self, trial: search.Trial, study: optuna.Study) -> None:
        """Print the trial's line."""
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        if trial.state == "complete":
            said = f"{self.metric} {number(trial.score, 4)} ± {number(trial.spread, 4)}"
        else:
            said = f"{trial.state} after {len(trial.folds)} fold(s)"
        try:
            best = f"best {number(study.best_value, 4)} (trial {study.best_trial.number})"
        except ValueError:  # no completed trial yet
            best = "no best yet"
        elapsed = time.monotonic() - self.started
        if self.timeout is not None:
            clock = f"{max(0.0, self.timeout - elapsed):.0f} s left"
        else:
            clock = f"{elapsed:.0f} s, ~{elapsed / done * (self.trials - done):.0f} s left"
        name = "trial 0 (current params)" if trial.number == 0 else f"trial {trial.number}"
        print(f"[{done}/{self.trials}] {name}: {said} | {best} | {clock}", flush=True)


def log_trial(trial: search.Trial, metric: str) -> None:
    """The trial as an MLflow run nested in the active (parent) run."""
    import mlflow

    with mlflow.start_run(run_name=f"trial {trial.number}", nested=True):
        mlflow.set_tag("state", trial.state)
        mlflow.log_params(trial.params)
        scores = {f"{metric}_fold_{k}": s for k, s in enumerate(trial.folds) if math.isfinite(s)}
        if trial.score is not None and math.isfinite(trial.score):
            scores |= {metric: trial.score, f"{metric}_std": trial.spread or 0.0}
        mlflow.log_metrics(scores | {"seconds": trial.seconds})


def objective_metric(params: Path, schema: Schema) -> tuple[str, ValueModel | None]:
    """The metric trials are scored by, and the value model when that is ``value_per_1000``."""
    section = load_optional("value", ValueParams, params)
    task = schema.target.task
    value = None if section is None else value_model(section, task, schema.target.labels)
    gate = load_section("gate", GateParams, params)
    metric = search.primary_metric(gate, task, value=value is not None)
    return metric, value if metric == VALUE else None


def training_rows(
    paths: Paths, schema: Schema, tune: TuneParams, value: ValueModel | None
) -> search.Rows:
    """The featurize stage's training rows and their folds; with ``value``, their amounts."""
    training = read_features(paths.train)
    amount = amount_of(value, paths.raw, schema, training[2])
    classes = len(schema.target.labels)
    task = schema.target.task
    return search.Rows.of(training, task, classes=classes, tune=tune, value=value, amount=amount)


def positive(text: str) -> int:
    """A number of trials: a whole number above 0 (TRIALS=)."""
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of trials above 0: {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    """Run the search, write the params when they improve, write the reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--trials", type=positive, help="instead of tune.trials")
    parser.add_argument("--timeout", type=float, help="seconds, instead of tune.timeout")
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    paths = load_paths(args.params)
    train = load_section("train", TrainParams, args.params)
    tune = load_section("tune", TuneParams, args.params)
    overrides = {"trials": args.trials, "timeout": args.timeout}
    tune = TuneParams.model_validate(
        tune.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    )
    schema = load_schema(paths.schema_)
    task = schema.target.task
    check_kind(train, task)
    metric, value = objective_metric(args.params, schema)
    space = search.space_of(train, tune)  # fails here, before any data is read
    engine = load_section("engine", EngineParams, args.params)
    rows = training_rows(paths, schema, tune, value)
    print(
        f"tuning {', '.join(space)} of {train.model} ({task}): {tune.trials} trials"
        + (f" or {tune.timeout:g} s" if tune.timeout else "")
        + f", {tune.folds}-fold CV of {metric} on {len(rows.y):,} training rows"
        + (" (trials on Dask)" if engine.kind == "dask" else ""),
        flush=True,
    )

    import mlflow

    experiment = load_section("register", RegisterParams, args.params).experiment
    use_experiment(paths.mlflow, experiment)
    tags = git_state()
    progress = Progress(tune.trials, tune.timeout, metric)

    def on_trial(trial: search.Trial, study: optuna.Study) -> None:
        progress(trial, study)
        log_trial(trial, metric)

    run_name = f"tune {train.model}@{tags['git_commit'][:8]}"
    with mlflow.start_run(run_name=run_name, tags=tags | {"kind": "tune"}):
        mlflow.log_params(
            {"model": train.model, "metric": metric, "folds": tune.folds, "seed": tune.seed}
            | {"engine": engine.kind}
        )
        on = functools.partial(parallel.run, engine=engine) if engine.kind == "dask" else search.run
        result = on(rows, train, tune, metric, on_trial)
        if result.improved:
            write_train_params(args.params, result.best.params)
        shape = {"rows": len(rows.y), "folds": tune.folds}
        write_json(
            args.json,
            report.document(
                result, **shape, seed=tune.seed, written=result.improved, engine=engine.kind
            ),
        )
        text = report.markdown(result, **shape, written=result.improved)
        write_atomically(args.markdown, lambda partial: partial.write_text(text))
        finite = {"baseline": result.baseline.score, "best": result.best.score}
        mlflow.log_metrics({k: v for k, v in finite.items() if v is not None and math.isfinite(v)})
        mlflow.log_artifact(str(args.json))
        mlflow.log_artifact(str(args.markdown))
    best, baseline = result.best, result.baseline
    if result.improved:
        print(
            f"trial {best.number}: {metric} {number(best.score, 4)} against "
            f"{number(baseline.score, 4)} for the current params: written into "
            f"{args.params}'s train: ({', '.join(f'{k}={v}' for k, v in best.params.items())})"
        )
    else:
        print(
            f"no trial beats the current params ({metric} {number(baseline.score, 4)}): "
            f"{args.params} is unchanged"
        )
    print(f"wrote {args.markdown} and {args.json}")
    return 0


if __name__ == "__main__":
    run_stage(main)
