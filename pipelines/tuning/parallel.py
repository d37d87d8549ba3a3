"""Trials on a Dask cluster: ``make tune`` with ``engine: {kind: dask}``.

The study lives in one Optuna storage that every worker opens: a ``JournalStorage`` over a
journal file (Optuna's own storage for processes that share a file system; no database, no
extra dependency). This process creates the study, enqueues the current params as trial 0, and
keeps one trial running on each worker thread of the cluster: a task loads the study from the
journal, runs one trial (asking the sampler, reporting each fold to the pruner, telling the
score), and returns its number. When a trial finishes, this process prints it, logs it to MLflow
and starts the next one, until ``tune.trials`` trials are started or ``tune.timeout`` passes (the
running trials finish).

The cluster is the one at ``DASK_SCHEDULER_ADDRESS``, or a local cluster of ``engine.workers``
on 127.0.0.1, as for the stages (:func:`pipelines.stages.dask_engine.cluster_client`). The
journal is in a temporary folder, or in ``TUNE_JOURNAL_DIR`` when it is set: a remote cluster's
workers must see the same file (a shared mount), which is checked before any trial runs.

What is reproducible: each trial samples from a random state of its own, seeded with the seed
and its number (:mod:`pipelines.tuning.sampler`). One trial at a time (a cluster of one
single-threaded worker) is the same study as the local engine's, trial for trial. With more,
trial n is sampled while other trials are still running, so TPE sees fewer finished trials than
it would one at a time, and which ones depends on timing: the trials after the first few, and the
best params, can differ from run to run. Trial 0 is the current params whatever the workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.params import EngineParams, TrainParams, TuneParams
from pipelines.stages.dask_engine import ADDRESS_VARIABLE, EngineError, cluster_client
from pipelines.tuning import search

if TYPE_CHECKING:
    import optuna
    from distributed import Client

JOURNAL_VARIABLE = "TUNE_JOURNAL_DIR"
JOURNAL = "tune.journal"


def storage_at(path: str) -> optuna.storages.BaseStorage:
    """The journal storage at ``path`` (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


def run_trial(objective: search.Objective, journal: str, seed: int) -> int:
    """On a worker: load the study from the journal, run one trial; its number.

    The trial's user attribute ``worker`` says which worker ran it.
    """
    from distributed import get_worker

    study = search.load_study(storage_at(journal), seed)
    worker = get_worker().address
    numbers: list[int] = []

    def here(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        numbers.append(trial.number)
        return objective(trial)

    study.optimize(here, n_trials=1)
    return numbers[0]


@contextmanager
def journal_folder() -> Iterator[Path]:
    """``TUNE_JOURNAL_DIR`` when set (left in place), else a temporary folder."""
    shared = os.environ.get(JOURNAL_VARIABLE)
    if shared:
        folder = Path(shared)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix="tune-") as named:
            yield Path(named)
        return
    with tempfile.TemporaryDirectory(prefix="tune-") as named:
        yield Path(named)


def check_workers_see(client: Client, path: Path, address: str | None) -> None:
    """Every worker can read the journal at ``path``.

    Raises:
        EngineError: Naming the workers that cannot, and ``TUNE_JOURNAL_DIR``.
    """
    seen = client.run(os.path.isfile, str(path))
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        where = f"{ADDRESS_VARIABLE}={address}" if address else "the local cluster"
        raise EngineError(
            f"the Dask workers {', '.join(blind)} ({where}) cannot read the study's journal "
            f"{path}: set {JOURNAL_VARIABLE} to a folder that this machine and every worker "
            "share (a network mount)"
        )


def slots_of(client: Client) -> int:
    """How many trials the cluster runs at once: one per worker thread."""
    return sum(int(w["nthreads"]) for w in client.scheduler_info()["workers"].values()) or 1


def run(
    rows: search.Rows,
    params: TrainParams,
    tune: TuneParams,
    metric: str,
    on_trial: Callable[[search.Trial, optuna.Study], None] | None = None,
    *,
    engine: EngineParams,
) -> search.Result:
    """Run the study on the Dask cluster, a trial per worker thread at a time.

    Args:
        rows: The training rows and their folds (sent to each worker once).
        params: The current train params (trial 0).
        tune: Trials, timeout, seed.
        metric: The metric to optimise.
        on_trial: Called here after each trial, in the order they finish.
        engine: The local cluster's workers and threads (without ``DASK_SCHEDULER_ADDRESS``).

    Returns:
        Every trial, in order of number, as :func:`pipelines.tuning.search.run` returns them.

    Raises:
        EngineError: Dask is missing, no scheduler answers, or the workers cannot see the journal.
        PipelineError: Nothing to tune, or the current params (trial 0) did not complete.
    """
    from distributed import as_completed

    objective = search.objective_of(rows, params, tune, metric)
    address = os.environ.get(ADDRESS_VARIABLE) or None
    with journal_folder() as folder, cluster_client(engine, address) as client:
        path = folder / JOURNAL
        study = search.new_study(objective, tune, storage_at(str(path)))
        check_workers_see(client, path, address)
        slots = slots_of(client)
        where = f"{ADDRESS_VARIABLE}={address}" if address else "a local cluster"
        scheduler = client.scheduler_info()["address"]
        print(f"trials on the Dask scheduler at {scheduler} ({where}): {slots} at once", flush=True)
        shared = client.scatter(objective, broadcast=True)
        started, submitted = time.monotonic(), 0
        running = as_completed()

        def more() -> bool:
            timed_out = tune.timeout is not None and time.monotonic() - started >= tune.timeout
            return submitted < tune.trials and not timed_out

        while submitted < min(slots, tune.trials):
            running.add(client.submit(run_trial, shared, str(path), tune.seed, pure=False))
            submitted += 1
        for future in running:
            number = future.result()
            if on_trial is not None:
                frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
                on_trial(search.trial_of(frozen), study)
            if more():
                running.add(client.submit(run_trial, shared, str(path), tune.seed, pure=False))
                submitted += 1
        return search.result_of(study, objective, tune)
