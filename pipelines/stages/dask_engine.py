"""The Dask engine: featurize, train and evaluate on a Dask cluster, a partition at a time.

Used by the featurize, train and evaluate stages when ``engine.kind`` is ``dask``. The cluster is
the one at ``DASK_SCHEDULER_ADDRESS`` (Dask's own variable), or a local cluster on 127.0.0.1 that
lives as long as the stage. No process holds the whole table:

- featurize reads the raw CSV in blocks (at least ``engine.partitions``), splits each by the
  hash of its ids exactly as the local engine does, and writes the train and test features as
  folders of Parquet partitions;
- train fits ``xgboost.dask`` on ``engine.partitions`` partitions of them; the model is the same
  XGBoost model, saved in the same file as the local engine's, so serving does not know which
  engine made it. A binary threshold tuned by value fits a model per fold on the cluster too
  (:func:`out_of_fold_on_dask`: the local engine's folds) and gathers three numbers a row;
- evaluate scores the test partitions on the cluster and gathers only ids, labels and
  probabilities (three numbers a row) for the metrics.

Dask needs the optional dependency group: ``make install GROUPS=distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.core.features import ID, LABEL, featurize, fold_of, in_test
from pipelines.core.io import PipelineError, atomic_path
from pipelines.core.metrics import Task
from pipelines.core.model import xgboost_arguments
from pipelines.params import EngineParams, FeaturizeParams, TrainParams
from pipelines.schema import Schema

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"
INSTALL = "make install GROUPS=distributed"
CONNECT_TIMEOUT = "30s"  # for a scheduler at DASK_SCHEDULER_ADDRESS to answer


class EngineError(PipelineError):
    """The engine cannot train what params ask for, or Dask is not installed."""


def check_engine(train: TrainParams, engine: EngineParams) -> None:
    """Refuse a combination of ``train:`` and ``engine:`` the Dask engine cannot run.

    Raises:
        EngineError: Naming both keys and what to change.
    """
    if engine.kind != "dask":
        return
    if train.model != "xgboost":
        raise EngineError(
            f"engine.kind: dask trains only train.model: xgboost, not {train.model}: "
            "set engine.kind: local, or train.model: xgboost"
        )
    if train.cv_folds >= 2:
        raise EngineError(
            "engine.kind: dask does not cross-validate (train.cv_folds: "
            f"{train.cv_folds}): set train.cv_folds: 0, or engine.kind: local"
        )


def _import_dask() -> None:
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as error:
        raise EngineError(
            f"engine.kind: dask needs Dask, which is not installed ({error.name}): "
            f"run `{INSTALL}`, or set engine.kind: local"
        ) from None


@contextmanager
def cluster_client(engine: EngineParams, address: str | None) -> Iterator[Client]:
    """A client of the cluster at ``address``, or of a local cluster started for the block.

    The local cluster listens on 127.0.0.1 only, without a dashboard, and is closed with the
    block. Its workers are threads of this process: on one machine, worker processes bring no
    memory the threads lack (XGBoost releases the GIL), and each would import XGBoost again
    (~20 s here) and take seconds to stop. A cluster at ``address`` is left running: only the
    client is closed.
    """
    _import_dask()
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise EngineError(
                f"no Dask scheduler answers at {ADDRESS_VARIABLE}={address} ({error}): "
                f"start it, or unset {ADDRESS_VARIABLE} for a local cluster"
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=engine.workers,
            threads_per_worker=engine.threads_per_worker,
            processes=False,
            host="127.0.0.1",
            protocol="tcp",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def read_partitioned(
    path: Path, partitions: int, rows: Callable[[Any], np.ndarray] | None = None
) -> tuple[dd.DataFrame, dd.Series]:
    """The features and labels of a featurize output as ``partitions`` Dask partitions.

    ``rows``, given a partition's ids, says which of its rows to keep (all, without it).

    The table is persisted on the cluster before its columns are taken apart: Dask plans the
    partitions of a Parquet read from the size of the columns it reads, so features and labels
    read lazily can be cut differently (5M rows: 886,722 feature rows against 665,475 labels in
    one partition), which XGBoost refuses.
    """
    import dask.dataframe as dd

    table = dd.read_parquet(path).repartition(npartitions=partitions)
    if rows is not None:
        table = table[table[ID].map_partitions(rows, meta=(ID, bool))]
    table = table.persist()
    return table.drop(columns=[ID, LABEL]), table[LABEL]


def fit_dask(
    client: Client, x: dd.DataFrame, y: dd.Series, params: TrainParams, task: Task = "binary"
) -> Any:
    """Fit the XGBoost model of ``params`` for ``task`` on the cluster behind ``client``.

    Returns:
        A fitted ``xgboost.dask.DaskXGBClassifier`` (or ``DaskXGBRegressor``): its
        ``save_model`` writes the file the local engine's model writes, which it loads.
    """
    import dask
    from xgboost.dask import DaskXGBClassifier, DaskXGBRegressor

    kind = DaskXGBRegressor if task == "regression" else DaskXGBClassifier
    model = kind(**xgboost_arguments(params, task))
    model.client = client
    # Finding the classes of y shuffles it; the task-based shuffle does that quietly, where
    # the peer-to-peer one logs warnings about its own bookkeeping.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        model.fit(x, y)
    return model


def _where(client: Client, address: str | None) -> str:
    info = client.scheduler_info()
    where = f"{ADDRESS_VARIABLE}={address}" if address else "a local cluster"
    return f"the Dask scheduler at {info['address']} ({where}, {len(info['workers'])} workers)"


def _partition_name(index: int) -> str:
    return f"part.{index:05d}.parquet"  # sorts as it is numbered: readers keep the row order


def featurize_on_dask(
    raw: Path,
    schema: Schema,
    *,
    params: FeaturizeParams,
    engine: EngineParams,
    train_path: Path,
    test_path: Path,
) -> None:
    """Split and encode the raw table on the cluster; write both sides as Parquet folders.

    Rows keep the raw table's order within each side (the local engine sorts by id); the sides
    hold the same rows as the local engine's.
    """
    address = os.environ.get(ADDRESS_VARIABLE) or None
    with cluster_client(engine, address) as client:
        import dask
        import dask.dataframe as dd

        numeric = {n: "float64" for n, f in schema.features.items() if f.type != "category"}
        table = dd.read_csv(raw, dtype=numeric)
        if table.npartitions < engine.partitions:
            table = table.repartition(npartitions=engine.partitions)
        print(f"featurizing on {_where(client, address)}: {table.npartitions} partitions of {raw}")

        def side(frame: Any, test: bool) -> Any:
            rows = in_test(frame[schema.id], params.test_size, params.seed) == test
            return featurize(frame[rows], schema)

        empty = featurize(table._meta, schema)
        with atomic_path(train_path) as train, atomic_path(test_path) as test:
            writes = [
                table.map_partitions(side, is_test, meta=empty).to_parquet(
                    folder, write_index=False, name_function=_partition_name, compute=False
                )
                for folder, is_test in ((train, False), (test, True))
            ]
            dask.compute(*writes)
            counts = [_rows(folder) for folder in (train, test)]
    for path, rows in zip((train_path, test_path), counts, strict=True):
        print(f"wrote {path}/: {rows} rows, {empty.shape[1] - 2} features")


def _rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in folder.glob("*.parquet"))


def train_on_dask(
    path: Path,
    params: TrainParams,
    engine: EngineParams,
    task: Task = "binary",
    held_out: Callable[[Any], np.ndarray] | None = None,
) -> tuple[Any, int, list[str], tuple[np.ndarray, np.ndarray] | None]:
    """Read the training features at ``path`` onto the cluster and fit there.

    Args:
        path: The training features.
        params: The model's params.
        engine: The cluster's settings.
        task: What the model predicts.
        held_out: Given a partition's ids, the rows kept out of the fit (a regression's
            calibration rows); they are scored on the cluster after it.

    Returns:
        The fitted model, the number of rows it was fitted on, the feature names in order, and
        the held-out rows' labels and predictions (None without ``held_out``).
    """
    address = os.environ.get(ADDRESS_VARIABLE) or None
    with cluster_client(engine, address) as client:
        kept = None if held_out is None else (lambda ids: ~held_out(ids))
        x, y = read_partitioned(path, engine.partitions, kept)
        print(
            f"training {params.model} on {_where(client, address)}: "
            f"{engine.partitions} partitions of {path}"
        )
        model = fit_dask(client, x, y, params, task)
        rows = int(y.shape[0].compute())
        scored = None
        if held_out is not None:
            import dask
            from xgboost import dask as dxgb

            x_out, y_out = read_partitioned(path, engine.partitions, held_out)
            output = dxgb.inplace_predict(client, model.get_booster(), x_out)
            labels, predicted = dask.compute(y_out, output)
            scored = (np.asarray(labels), np.asarray(predicted, dtype=np.float64))
    return model, rows, list(x.columns), scored


def out_of_fold_on_dask(
    path: Path, params: TrainParams, engine: EngineParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary model's probability for each training row from the model of the other folds.

    The folds are the local engine's (:func:`pipelines.stages.train.out_of_fold`):
    ``threshold_folds`` of them by a hash of the id salted with ``seed``. Each fold's model is
    fitted on the cluster and scores its fold there.

    Returns:
        Labels, out-of-fold probabilities and ids of every training row (fold by fold).
    """
    import dask
    import dask.dataframe as dd
    from xgboost import dask as dxgb

    folds, seed = params.threshold_folds, params.seed
    address = os.environ.get(ADDRESS_VARIABLE) or None
    scored = []
    with cluster_client(engine, address) as client:
        for k in range(folds):

            def other(ids: Any, k: int = k) -> np.ndarray:
                return fold_of(ids, folds, seed) != k

            print(f"fold {k + 1} of {folds} for the threshold, on {_where(client, address)}")
            x, y = read_partitioned(path, engine.partitions, other)
            booster = fit_dask(client, x, y, params, "binary").get_booster()
            table = dd.read_parquet(path)
            table = table[~table[ID].map_partitions(other, meta=(ID, bool))]
            probability = dxgb.inplace_predict(client, booster, table[list(x.columns)])
            scored.append(dask.compute(table[LABEL], probability, table[ID]))
    labels, probability, ids = (
        np.concatenate([np.asarray(p[i]) for p in scored]) for i in range(3)
    )
    return labels, probability.astype(np.float64), ids


def score_on_dask(
    model: Any, features: list[str], path: Path, engine: EngineParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score the test features at ``path`` on the cluster with a fitted XGBoost model.

    Returns:
        Labels, the model's outputs (:func:`pipelines.core.model.predict`) and ids, in the
        order of the features' rows.
    """
    import dask
    import dask.dataframe as dd
    from xgboost import dask as dxgb

    address = os.environ.get(ADDRESS_VARIABLE) or None
    with cluster_client(engine, address) as client:
        table = dd.read_parquet(path)
        print(f"scoring on {_where(client, address)}: {table.npartitions} partitions of {path}")
        probability = dxgb.inplace_predict(client, model.get_booster(), table[features])
        y, p, ids = dask.compute(table[LABEL], probability, table[ID])
    return np.asarray(y), np.asarray(p, dtype=np.float64), np.asarray(ids)
