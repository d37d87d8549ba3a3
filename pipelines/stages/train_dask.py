"""The train stage's Dask engine: the XGBoost model fitted with ``xgboost.dask`` on a cluster.

Used by :mod:`pipelines.stages.train` when ``engine.kind`` is ``dask``. The cluster is the one at
``DASK_SCHEDULER_ADDRESS`` (Dask's own variable), or a local cluster on 127.0.0.1 that lives as
long as the fit. The training features are read as ``engine.partitions`` Dask partitions, so no
process holds the whole table; the fitted model is the same XGBoost model, saved in the same
file as the local engine's, so evaluation and serving do not know which engine made it.

Dask needs the optional dependency group: ``make install GROUPS=distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.params import EngineParams, TrainParams
from pipelines.stage import PipelineError

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


def read_partitioned(path: Path, partitions: int) -> tuple[dd.DataFrame, dd.Series]:
    """The features and labels of a featurize output as ``partitions`` Dask partitions (lazy)."""
    import dask.dataframe as dd

    from pipelines.stages.featurize import ID, LABEL

    table = dd.read_parquet(path).repartition(npartitions=partitions)
    return table.drop(columns=[ID, LABEL]), table[LABEL]


def fit_dask(client: Client, x: dd.DataFrame, y: dd.Series, params: TrainParams) -> Any:
    """Fit the XGBoost model of ``params`` on the cluster behind ``client``.

    Returns:
        A fitted ``xgboost.dask.DaskXGBClassifier``: its ``save_model`` writes the file the local
        engine's ``XGBClassifier`` writes, and ``XGBClassifier.load_model`` reads it.
    """
    import dask
    from xgboost.dask import DaskXGBClassifier

    from pipelines.stages.train import xgboost_arguments

    model = DaskXGBClassifier(**xgboost_arguments(params))
    model.client = client
    # Finding the classes of y shuffles it; the task-based shuffle does that quietly, where
    # the peer-to-peer one logs warnings about its own bookkeeping.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        model.fit(x, y)
    return model


def train_on_dask(
    path: Path, params: TrainParams, engine: EngineParams
) -> tuple[Any, int, list[str]]:
    """Read the training features at ``path`` onto the cluster and fit there.

    Returns:
        The fitted model, the number of training rows and the feature names in order.
    """
    address = os.environ.get(ADDRESS_VARIABLE) or None
    with cluster_client(engine, address) as client:
        info = client.scheduler_info()
        where = f"{ADDRESS_VARIABLE}={address}" if address else "a local cluster"
        x, y = read_partitioned(path, engine.partitions)
        print(
            f"training {params.model} on the Dask scheduler at {info['address']} ({where}, "
            f"{len(info['workers'])} workers): {engine.partitions} partitions of {path}"
        )
        model = fit_dask(client, x, y, params)
        rows = int(y.shape[0].compute())
    return model, rows, list(x.columns)
