"""A monitored model of each task beyond binary, built once per session for the monitoring tests
(:func:`tests.support.tasks.monitored`)."""

from __future__ import annotations

import pytest

from tests.support.tasks import Monitored
from tests.support.tasks import monitored as build


@pytest.fixture(scope="session", params=["regression", "multiclass"])
def monitored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Monitored:
    """The task's model, its reference profile and a params.yaml whose gate is the task's."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp(f"monitored-{request.param}")
        return build(root, request.param, monkeypatch)
