"""Trials on Dask: one study in one journal, trials on the workers, the local result on one worker.

Local clusters on 127.0.0.1, on a small project of the repository's own table; every expectation
comes from its schema and params, as in the search's tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core.features import read_features
from pipelines.core.metrics import METRICS
from pipelines.params import EngineParams, GateParams, TrainParams, TuneParams, load_section
from pipelines.schema import Schema, dump_schema, load_schema
from pipelines.stages.dask_engine import EngineError, cluster_client
from pipelines.tuning import parallel, search, tune
from tests.support.tuning import edit, tune_project

pytest.importorskip("distributed")

TRIALS = 4


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, raw: pd.DataFrame, schema: Schema) -> Path:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("parallel")
        changes = {("tune", "trials"): TRIALS}
        return tune_project(root, raw, dump_schema(schema), monkeypatch, changes).parent


def loaded(project: Path) -> tuple[search.Rows, TrainParams, TuneParams, str]:
    params = project / "params.yaml"
    schema = load_schema(project / "schema.yaml")
    settings = load_section("tune", TuneParams, params)
    rows = search.Rows.of(
        read_features(project / "train.parquet"),
        schema.target.task,
        classes=len(schema.target.labels),
        tune=settings,
    )
    metric = search.primary_metric(load_section("gate", GateParams, params), schema.target.task)
    return rows, load_section("train", TrainParams, params), settings, metric


def dask(workers: int) -> EngineParams:
    return EngineParams(kind="dask", workers=workers, threads_per_worker=1)


@pytest.fixture(scope="module")
def local(project: Path) -> search.Result:
    return search.run(*loaded(project))


def test_trials_run_on_the_workers_in_one_study_trial_0_first(
    project: Path, local: search.Result, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    rows, train, settings, metric = loaded(project)
    seen: list[int] = []
    result = parallel.run(
        rows, train, settings, metric, lambda trial, _: seen.append(trial.number), engine=dask(2)
    )

    assert [t.number for t in result.trials] == list(range(TRIALS))  # one study, no gap
    assert sorted(seen) == list(range(TRIALS))  # each reported here once, as it finished
    workers = {t.worker for t in result.trials}
    assert len(workers) == 2, workers  # both workers ran trials; none ran in this process
    assert all(w and w.startswith("tcp://127.0.0.1:") for w in workers)
    assert result.trials[0].params == local.trials[0].params  # the current params
    assert result.trials[0].folds == local.trials[0].folds
    sign = METRICS[rows.task][metric].sign
    assert sign * ((result.best.score or 0) - (result.baseline.score or 0)) >= 0


def test_one_worker_runs_the_local_study_trial_for_trial(
    project: Path, local: search.Result, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    one = parallel.run(*loaded(project), engine=dask(1))
    assert [t.params for t in one.trials] == [t.params for t in local.trials]
    assert [t.folds for t in one.trials] == [t.folds for t in local.trials]
    assert [t.state for t in one.trials] == [t.state for t in local.trials]
    assert one.best.params == local.best.params


def test_a_trial_samples_by_the_seed_and_its_number_only(project: Path) -> None:
    """Trial n's random draws do not depend on how many draws other trials made first."""
    from pipelines.tuning.sampler import trial_seed

    rows, train, settings, metric = loaded(project)
    seeds = {trial_seed(settings.seed, n) for n in range(100)}
    assert len(seeds) == 100
    assert trial_seed(settings.seed, 3) != trial_seed(settings.seed + 1, 3)
    # the first trials are TPE's random start-up: the same params whatever ran before them
    once = search.run(rows, train, settings.model_copy(update={"trials": 2}), metric)
    assert once.trials[1].params == search.run(rows, train, settings, metric).trials[1].params


def test_a_time_limit_stops_starting_trials_and_the_running_ones_finish(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    rows, train, settings, metric = loaded(project)
    limited = settings.model_copy(update={"trials": 50, "timeout": 0.01})
    result = parallel.run(rows, train, limited, metric, engine=dask(2))
    assert result.stopped_by == "timeout"
    assert len(result.trials) == 2  # the two started at once, finished
    assert all(t.state != "failed" for t in result.trials)


def test_workers_that_cannot_read_the_journal_are_named(tmp_path: Path) -> None:
    with cluster_client(dask(1), None) as client:
        unreadable = r"cannot read the study's journal .*TUNE_JOURNAL_DIR"
        with pytest.raises(EngineError, match=unreadable):
            parallel.check_workers_see(client, tmp_path / "elsewhere" / parallel.JOURNAL, None)
        (tmp_path / parallel.JOURNAL).write_text("")
        parallel.check_workers_see(client, tmp_path / parallel.JOURNAL, None)


def test_make_tune_on_dask_writes_what_the_local_engine_writes(
    tmp_path: Path, raw: pd.DataFrame, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("TUNE_JOURNAL_DIR", str(tmp_path / "journal"))
    params = tune_project(tmp_path, raw, dump_schema(schema), monkeypatch)
    edit(params, {("engine", "kind"): "dask", ("engine", "workers"): 2})
    reports = ["--markdown", "reports/tune.md", "--json", "reports/tune.json"]
    assert tune.main(reports) == 0
    report = json.loads((tmp_path / "reports" / "tune.json").read_text())
    assert report["engine"] == "dask"
    assert report["trials"] == len(report["history"]) == 3
    assert all(t["worker"] for t in report["history"])
    assert report["written"] is report["improved"] is True  # the weak current params lose
    assert (tmp_path / "reports" / "tune.md").is_file()
    assert list((tmp_path / "journal").iterdir()) == []  # the study's journal is gone
