"""`mlflow models serve` of the registered model: raw records in, the evaluated probabilities out.

The registered model stands on its own (pipelines/serving/mlflow_model.py): MLflow users serve it
without this repository's service, and a bad record gets a 400 naming the column and the rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest

from pipelines.core.lineage import tracking_uri
from pipelines.params import load_paths
from pipelines.schema import load_schema, read_raw
from tests.support.serving import Server, launch, records
from tools.scratch import BIN, ScratchRepo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(
    project: ScratchRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    paths = load_paths(project.path / "params.yaml")
    uri = json.loads((project.path / paths.registry).read_text())["model_uri"]
    env = project.env | {"MLFLOW_TRACKING_URI": tracking_uri(project.path / paths.mlflow)}
    log = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", "{port}", "-w", "1"]
    server = launch(project, command, env, uri, log, ready="/ping")
    yield server
    server.stop()


def test_raw_records_get_the_probabilities_the_pipeline_evaluated(mlflow_server: Server) -> None:
    repo = mlflow_server.repo
    paths = load_paths(repo.path / "params.yaml")
    schema = load_schema(repo.path / paths.schema_)
    predictions = pd.read_csv(repo.path / paths.predictions).head(20)
    rows = read_raw(repo.path / paths.raw).set_index(schema.id).loc[predictions["id"]]
    body = {"dataframe_records": records(rows.reset_index(), schema)}  # ints, floats, nulls
    answer = httpx.post(f"{mlflow_server.url}/invocations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(got, predictions["probability"], rtol=0, atol=1e-6)


def test_a_record_that_breaks_the_schema_gets_a_400_naming_the_column(
    mlflow_server: Server,
) -> None:
    repo = mlflow_server.repo
    paths = load_paths(repo.path / "params.yaml")
    schema = load_schema(repo.path / paths.schema_)
    # text that is no category (the schema check's words), or no number (MLflow's own check)
    categories = [n for n, f in schema.features.items() if f.type == "category"]
    name = (categories or list(schema.features))[0]
    (record,) = records(read_raw(repo.path / paths.raw).head(1), schema)
    body = {"dataframe_records": [record | {name: "no such value"}]}
    answer = httpx.post(f"{mlflow_server.url}/invocations", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert name in message, message
    if categories:
        assert f"{name}: expected values in" in message, message
        assert "1 of 1 rows fails" in message
