"""The search: an Optuna study over train's params, each trial cross-validated on the training rows.

The space is ``tune.space``'s section of ``train.model``; the sampler is TPE, seeded per trial
(:mod:`pipelines.tuning.sampler`), and a median pruner stops a trial whose running mean over the
folds so far is worse than the median of the trials before it at the same fold. The current params
are enqueued as trial 0, so the best trial is never worse than what the repository has. A trial's
score is the mean over the folds of the metric the train stage's cross-validation computes
(:func:`pipelines.stages.train.fold_score`); folds go by a hash of the id
(:func:`pipelines.core.features.fold_of`), so the training rows are all there is: the test rows are
another file.

When the gate's first metric is ``value_per_1000`` and params state a value model, a trial is
scored by value (:func:`value_scores`): each fold's value per 1,000 rows at the decisions the train
stage would make. A binary model with ``train.threshold: value`` decides at the threshold of the
most value over the out-of-fold probabilities of the folds scored so far, as the train stage
chooses its threshold from its own out-of-fold probabilities; a fixed threshold stays fixed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.core.features import fold_of
from pipelines.core.io import PipelineError
from pipelines.core.metrics import BETTER, METRICS, VALUE, Better, Task
from pipelines.core.model import predict
from pipelines.core.value import ValueModel, best_threshold
from pipelines.params import GateParams, SearchEntry, TrainParams, TuneParams
from pipelines.stages.train import fit, fold_score
from pipelines.tuning.sampler import TrialSeededTPE, pruner

if TYPE_CHECKING:
    import optuna

SIGNIFICANT = 4  # digits a searched float keeps: params.yaml reads 0.0347, not 0.034712893
MIN_FOR_IMPORTANCE = 4  # completed trials before the parameters' importance means anything
STUDY = "tune"  # the study's name in a storage that trials on other processes share


@dataclass(frozen=True)
class Rows:
    """The training rows a study scores trials on, each row's fold, and what decisions earn."""

    x: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    task: Task
    classes: int
    value: ValueModel | None = None  # params' value model, to score trials by value
    amount: np.ndarray | None = None  # each row's amount (value.amount), None without one

    @classmethod
    def of(
        cls,
        training: tuple[pd.DataFrame, np.ndarray, np.ndarray],
        task: Task,
        *,
        classes: int,
        tune: TuneParams,
        value: ValueModel | None = None,
        amount: np.ndarray | None = None,
    ) -> Rows:
        """``read_features``' (matrix, labels, ids) with each row's fold (``fold_of``)."""
        x, y, ids = training
        fold = fold_of(pd.Series(ids), tune.folds, tune.seed)
        return cls(x, y, fold, task, classes, value, amount)


@dataclass(frozen=True)
class Trial:
    """One trial: its params (by their path in train:), its score per fold and their mean."""

    number: int
    state: str  # complete | pruned | failed
    params: dict[str, Any]
    folds: tuple[float, ...]
    seconds: float
    worker: str | None = None  # the Dask worker that ran it (None: this process)
    threshold: float | None = None  # a binary model's, when the trial is scored by value

    @property
    def score(self) -> float | None:
        """The mean over the folds of a completed trial (None for a pruned one)."""
        return float(np.mean(self.folds)) if self.state == "complete" else None

    @property
    def spread(self) -> float | None:
        """The standard deviation across the folds of a completed trial."""
        return float(np.std(self.folds)) if self.state == "complete" else None


@dataclass(frozen=True)
class Result:
    """What a study found: every trial, which way is better, why it stopped, the importances."""

    metric: str
    better: Better
    trials: tuple[Trial, ...]
    stopped_by: str  # trials | timeout
    importance: dict[str, float] = field(default_factory=dict)

    @property
    def baseline(self) -> Trial:
        """Trial 0: the current params."""
        return self.trials[0]

    @property
    def best(self) -> Trial:
        """The best completed trial; on a tie the earlier (trial 0 first)."""
        sign = 1 if self.better == "higher" else -1
        complete = [t for t in self.trials if t.score is not None and math.isfinite(t.score)]
        return max(complete, key=lambda t: (sign * (t.score or 0.0), -t.number))

    @property
    def improved(self) -> bool:
        """Whether the best trial beats the current params."""
        return self.best.number != self.baseline.number


def primary_metric(gate: GateParams, task: Task, value: bool = False) -> str:
    """The gate's first metric that a model of ``task`` has: the metric the search optimises.

    ``value_per_1000`` counts when params state a value model (``value``).

    Raises:
        PipelineError: The gate has no metric of the task.
    """
    for name in gate.metrics:
        if name in METRICS[task] or (name == VALUE and value):
            return name
    raise PipelineError(
        f"gate.metrics has no metric of a {task} model (it has {', '.join(gate.metrics)}): "
        "tuning optimises the gate's first one"
    )


def value_scores(
    rows: Rows, output: np.ndarray, done: int, threshold: float | str
) -> tuple[list[float], float | None]:
    """Value per 1,000 rows of each of the first ``done`` folds at the train stage's decisions.

    Args:
        rows: The training rows, with their value model.
        output: Each row's out-of-fold output (:func:`pipelines.core.model.predict`); rows of
            the folds not done yet are ignored.
        done: How many folds are scored (folds 0 to done - 1).
        threshold: ``train.threshold``: a probability, or ``value`` (binary).

    Returns:
        The value of each fold, and a binary model's threshold (None for the other tasks).
    """
    value = rows.value
    if value is None:
        raise PipelineError("scoring by value needs a value: section in params.yaml")
    scored = rows.fold < done
    chosen: float | None = None
    if rows.task == "binary":
        if threshold == "value":
            amount = None if rows.amount is None else rows.amount[scored]
            chosen = best_threshold(value, rows.y[scored], output[scored], amount)[0]
        else:
            chosen = float(threshold)
        decided = (output >= chosen).astype(np.int64)
    elif rows.task == "multiclass":
        decided = value.decide(output)
    else:
        decided = output
    gains = value.gains(rows.y, decided, rows.amount)
    return [value.per_1000(gains[rows.fold == k]) for k in range(done)], chosen


def space_of(params: TrainParams, tune: TuneParams) -> dict[str, SearchEntry]:
    """The entries searched for ``train.model``, by their path in train: (``xgboost.max_depth``).

    Raises:
        PipelineError: The model has nothing to tune (the dummy), or the space names none of its
            parameters.
    """
    if params.model == "dummy":
        raise PipelineError("train.model is dummy, which has no parameters: nothing to tune")
    entries = tune.space.of(params.model)
    if not entries:
        raise PipelineError(
            f"tune.space.{params.model} names no parameter of train.{params.model}: "
            "nothing to search"
        )
    return {f"{params.model}.{key}": entry for key, entry in entries.items()}


def current_values(params: TrainParams, names: list[str]) -> dict[str, Any]:
    """The values params.yaml has for ``names`` (paths in train:)."""
    values = {}
    for name in names:
        section, key = name.split(".", 1)
        values[name] = getattr(getattr(params, section), key)
    return values


def with_values(params: TrainParams, values: dict[str, Any]) -> TrainParams:
    """``params`` with the given values (paths in train:) replaced, validated again."""
    document = params.model_dump()
    for name, value in values.items():
        section, key = name.split(".", 1)
        document[section][key] = value
    return TrainParams.model_validate(document)


def suggest(trial: optuna.Trial, name: str, entry: SearchEntry, integer: bool) -> Any:
    """The trial's value for one parameter: a choice, or a number in the range (log scale)."""
    if entry.choices is not None:
        return trial.suggest_categorical(name, list(entry.choices))
    if entry.low is None or entry.high is None:  # the params model refuses it: for the types
        raise PipelineError(f"tune.space.{name}: a range needs low and high")
    if integer:
        return trial.suggest_int(name, int(entry.low), int(entry.high), log=entry.log)
    return trial.suggest_float(name, float(entry.low), float(entry.high), log=entry.log)


def _rounded(value: Any) -> Any:
    return float(f"{value:.{SIGNIFICANT}g}") if isinstance(value, float) else value


@dataclass(frozen=True)
class Objective:
    """A trial's score: the mean over the folds of the model with the trial's params.

    A plain object of data (rows, params, space), so that it can travel to where trials run.
    """

    rows: Rows
    params: TrainParams
    space: dict[str, SearchEntry]
    metric: str
    folds: int

    def values(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's params by their path in train: (trial 0's: the current ones, exactly)."""
        integer = {
            n: type(v) is int for n, v in current_values(self.params, list(self.space)).items()
        }
        values = {n: suggest(trial, n, e, integer[n]) for n, e in self.space.items()}
        return values if trial.number == 0 else {n: _rounded(v) for n, v in values.items()}

    def __call__(self, trial: optuna.Trial) -> float:
        """Fit and score fold by fold; report the running mean, so that the pruner may stop it."""
        import optuna

        started = time.perf_counter()
        values = self.values(trial)
        trial.set_user_attr("params", values)
        params = with_values(self.params, values)
        fold = self.rows.fold
        scores: list[float] = []
        x, y, task = self.rows.x, self.rows.y, self.rows.task
        output: np.ndarray | None = None  # out of fold, when scored by value
        for k in range(self.folds):
            rows = (np.flatnonzero(fold != k), np.flatnonzero(fold == k))
            if self.metric == VALUE:
                predicted = predict(
                    fit(x.iloc[rows[0]], y[rows[0]], params, task), x.iloc[rows[1]], task
                )
                if output is None:
                    output = np.zeros((len(y), *predicted.shape[1:]))
                output[rows[1]] = predicted
                scores, threshold = value_scores(self.rows, output, k + 1, params.threshold)
                trial.set_user_attr("threshold", threshold)
            else:
                metric = self.metric
                classes = self.rows.classes
                scores.append(fold_score(x, y, rows, params, task, classes=classes, metric=metric))
            trial.set_user_attr("folds", scores)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.report(float(np.mean(scores)), k)
            if k < self.folds - 1 and trial.should_prune():
                raise optuna.TrialPruned
        return float(np.mean(scores))


def run(
    rows: Rows,
    params: TrainParams,
    tune: TuneParams,
    metric: str,
    on_trial: Callable[[Trial, optuna.Study], None] | None = None,
) -> Result:
    """Run the study in this process: ``tune.trials`` trials, or fewer when ``tune.timeout`` passes.

    Args:
        rows: The training rows and their folds.
        params: The current train params (trial 0).
        tune: Trials, timeout, seed.
        metric: The metric to optimise, in the rows' task's registry.
        on_trial: Called after each trial (progress, MLflow).

    Returns:
        Every trial, in order, and the parameters' importance when enough trials completed.

    Raises:
        PipelineError: Nothing to tune, or the current params (trial 0) did not complete.
    """
    objective = objective_of(rows, params, tune, metric)
    study = new_study(objective, tune)

    def callback(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial_of(frozen), study)

    study.optimize(objective, n_trials=tune.trials, timeout=tune.timeout, callbacks=[callback])
    return result_of(study, objective, tune)


def objective_of(rows: Rows, params: TrainParams, tune: TuneParams, metric: str) -> Objective:
    """The study's objective: ``params`` with the searched values, cross-validated on ``rows``.

    Raises:
        PipelineError: Nothing to tune (the dummy, or a space naming none of the parameters).
    """
    return Objective(rows, params, space_of(params, tune), metric, tune.folds)


def better_of(objective: Objective) -> Better:
    """Which way the objective's metric is better."""
    return BETTER[objective.metric]


def new_study(
    objective: Objective, tune: TuneParams, storage: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """A study with trial 0, the current params, enqueued; in memory, or in ``storage``.

    Its sampler is TPE, seeded per trial from ``tune.seed`` (:mod:`pipelines.tuning.sampler`);
    a process that runs trials of the study loads it with :func:`load_study`.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY,
        direction="maximize" if better_of(objective) == "higher" else "minimize",
        sampler=TrialSeededTPE(tune.seed),
        pruner=pruner(),
    )
    study.enqueue_trial(current_values(objective.params, list(objective.space)))
    return study


def load_study(storage: optuna.storages.BaseStorage, seed: int) -> optuna.Study:
    """The study of :func:`new_study` in ``storage``, with the same sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=STUDY, storage=storage, sampler=TrialSeededTPE(seed), pruner=pruner()
    )


def result_of(study: optuna.Study, objective: Objective, tune: TuneParams) -> Result:
    """What a finished study found.

    Raises:
        PipelineError: The current params (trial 0) did not complete.
    """
    trials = tuple(trial_of(t) for t in sorted(study.trials, key=lambda t: t.number))
    complete = [t for t in trials if t.state == "complete"]
    if not complete or complete[0].number != 0:
        raise PipelineError(f"the current params (trial 0) did not complete: {trials[0].state}")
    stopped_by = "trials" if len(trials) >= tune.trials else "timeout"
    shares = importance(study, tune.seed, len(complete))
    return Result(objective.metric, better_of(objective), trials, stopped_by, shares)


def trial_of(frozen: optuna.trial.FrozenTrial) -> Trial:
    """Our record of an Optuna trial."""
    state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(frozen.state.name, "failed")
    return Trial(
        number=frozen.number,
        state=state,
        params=dict(frozen.user_attrs.get("params", frozen.params)),
        folds=tuple(frozen.user_attrs.get("folds", ())),
        seconds=float(frozen.user_attrs.get("seconds", 0.0)),
        worker=frozen.user_attrs.get("worker"),
        threshold=frozen.user_attrs.get("threshold"),
    )


def importance(study: optuna.Study, seed: int, complete: int) -> dict[str, float]:
    """Each parameter's share of the score's variance (fANOVA), when enough trials completed."""
    import optuna

    values = {t.value for t in study.trials if t.value is not None}
    if complete < MIN_FOR_IMPORTANCE or len(values) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. every completed trial had the same params
        return {}
    return {name: round(float(share), 4) for name, share in found.items()}
