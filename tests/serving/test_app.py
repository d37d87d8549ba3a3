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
apis = service.ModelService.apis.values()
print(json.dumps({
    "signatures_kept": {
        a.name: list(s.parameters) if (s := vars(a.func).get("__signature__")) else None
        for a in apis
    },
    "middlewares": [m.cls.__module__ + "." + m.cls.__name__ for m in middlewares],
    "timeout": next(m.kwargs["timeout"] for m in middlewares if "timeout" in m.kwargs),
    "traced": {
        path: not excluded.url_disabled("http://127.0.0.1:3000" + path)
        for path in ("/predict", "/explain", "/metrics", "/readyz")
    },
}))
"""


def assemble(
    tmp_path: Path, environment: dict[str, str] | None = None, **serve: Any
) -> dict[str, Any]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["serve"].update(serve)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "schema.yaml").write_text((ROOT / "schema.yaml").read_text())
    env = (
        os.environ
        | (environment or {})
        | {
            "PYTHONPATH": str(ROOT),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", ASSEMBLE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        return {"failed": done.stderr}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = assemble(tmp_path_factory.mktemp("app"))
    assert "failed" not in app, app.get("failed", "")[-3000:]
    return app


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


def test_with_a_key_file_the_key_check_runs_first_of_ours_and_inside_the_observer(
    default_app: dict[str, Any], tmp_path: Path
) -> None:
    """Before the card is read or a body is taken in, and counted by the observer; without the
    file, no check at all."""
    assert not any(name.endswith(".RequireKey") for name in default_app["middlewares"])
    (tmp_path / "keys").write_text("# key digests\n" + "0" * 64 + " team-a\n")
    app = assemble(tmp_path, {"MODEL_API_KEYS_FILE": str(tmp_path / "keys")})
    assert "failed" not in app, app.get("failed", "")[-3000:]
    names = [name.rsplit(".", 1)[1] for name in app["middlewares"]]
    order = [names.index(n) for n in ("RequestObserver", "RequireKey", "Document", "RequestGuard")]
    assert order == sorted(order), names


def test_a_key_file_that_is_set_but_bad_stops_the_service_naming_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").write_text("0" * 64 + " team-a\nnot-a-digest\n")
    app = assemble(tmp_path, {"MODEL_API_KEYS_FILE": str(tmp_path / "keys")})
    assert f"MODEL_API_KEYS_FILE={tmp_path}/keys, line 2" in app["failed"]


def test_each_apis_signature_is_kept_on_its_function(default_app: dict[str, Any]) -> None:
    """BentoML reads it on every call; kept, inspect answers it without working it out again."""
    assert default_app["signatures_kept"] == {
        "predict": ["self", "records"],
        "explain": ["self", "records"],
    }
