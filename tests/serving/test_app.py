"""The service's HTTP app as BentoML assembles it from ``pipelines/serving/service.py`` and params.

Built in a subprocess (importing the service configures BentoML process-wide), from a directory
holding only params.yaml and schema.yaml: no model or server is needed to see the middleware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.columns import ROOT

ASSEMBLE = """
import json
import pipelines.serving.service as service
from _bentoml_impl.server.app import ServiceAppFactory

service.ModelService.inject_config()
middlewares = ServiceAppFactory(service.ModelService).middlewares
otel = next(m for m in middlewares if m.cls.__name__ == "OpenTelemetryMiddleware")
excluded = otel.kwargs["excluded_urls"]
print(json.dumps({
    "middlewares": [m.cls.__module__ + "." + m.cls.__name__ for m in middlewares],
    "timeout": next(m.kwargs["timeout"] for m in middlewares if "timeout" in m.kwargs),
    "traced": {
        path: not excluded.url_disabled("http://127.0.0.1:3000" + path)
        for path in ("/predict", "/explain", "/metrics", "/readyz")
    },
}))
"""


def assemble(tmp_path: Path, **serve: Any) -> dict[str, Any]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["serve"].update(serve)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "schema.yaml").write_text((ROOT / "schema.yaml").read_text())
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    done = subprocess.run(
        [sys.executable, "-c", ASSEMBLE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return assemble(tmp_path_factory.mktemp("app"))


def test_the_request_timeout_is_ours_and_bentomls_is_gone(default_app: dict[str, Any]) -> None:
    names = default_app["middlewares"]
    assert "pipelines.serving.http.RequestObserver" in names  # it wraps RequestTimeout
    assert not any(name.endswith(".TimeoutMiddleware") for name in names)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert default_app["timeout"] == params["serve"]["timeout"]


def test_the_guard_runs_inside_the_timeout_and_concurrency_limit(
    default_app: dict[str, Any],
) -> None:
    names = [name.rsplit(".", 1)[1] for name in default_app["middlewares"]]
    assert names.index("RequestObserver") < names.index("RequestGuard")
    assert names.index("MaxConcurrencyMiddleware") < names.index("RequestGuard")


def test_the_request_metrics_are_taken_outside_the_limit_and_the_guard(
    default_app: dict[str, Any],
) -> None:
    """So the observer sees the limit's 429, the guard's 413 and 415, and (its own timeout's)
    504: Starlette runs the middleware listed first outermost."""
    names = [name.rsplit(".", 1)[1] for name in default_app["middlewares"]]
    assert names.index("RequestObserver") < names.index("MaxConcurrencyMiddleware"), names
    assert names.index("RequestObserver") < names.index("RequestGuard"), names


def test_api_routes_are_not_traced_unless_tracing_is_on(
    default_app: dict[str, Any], tmp_path: Path
) -> None:
    assert default_app["traced"] == {
        "/predict": False,
        "/explain": False,
        "/metrics": True,
        "/readyz": True,
    }
    traced = assemble(tmp_path, tracing=True)["traced"]
    assert all(traced.values()), traced
