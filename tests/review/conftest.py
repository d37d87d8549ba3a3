"""A model of each task on its real table, trained once for the review tests that read one."""

from __future__ import annotations

import pytest

from tests.support.tasks import Project, pipeline


@pytest.fixture(scope="package", params=["regression", "multiclass"])
def task_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The task's table through validate, featurize, train and evaluate (BASE's model)."""
    task = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        return pipeline(tmp_path_factory.mktemp(f"{task}-base"), task, monkeypatch)
