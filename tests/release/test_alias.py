"""`make model-alias`: registry aliases on a real MLflow store, and a no-op without one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.release import alias


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A sqlite MLflow store with two versions of the model ``m``."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path / "model"))
    return uri


def test_the_alias_follows_the_released_version(store: str) -> None:
    from mlflow import MlflowClient

    assert alias.set_alias("staging", "models:/m/1", store) == (
        f"models:/m@staging is now version 1 on {store}"
    )
    assert alias.set_alias("staging", "models:/m/1", store) == (
        f"models:/m@staging is version 1 already ({store})"
    )
    said = alias.set_alias("staging", "models:/m/2", store)
    assert said == f"models:/m@staging is now version 2 (was version 1) on {store}"
    client = MlflowClient(tracking_uri=store)
    assert str(client.get_model_version_by_alias("m", "staging").version) == "2"
    assert alias.set_alias("production", "models:/m/1", store).startswith("models:/m@production")
    assert str(client.get_model_version_by_alias("m", "staging").version) == "2"


@pytest.mark.parametrize(
    ("name", "uri", "said"),
    [
        ("staging", "models:/m/9", "could not point staging at models:/m/9"),
        ("staging", "models:/m@staging", "give a registered version, models:/<name>/<version>"),
        ("latest", "models:/m/1", "neither 'latest' nor a version"),
        ("v2", "models:/m/1", "neither 'latest' nor a version"),
        ("pre prod", "models:/m/1", "letters, digits"),
    ],
)
def test_a_bad_alias_uri_or_version_is_named(store: str, name: str, uri: str, said: str) -> None:
    with pytest.raises(PipelineError, match=said):
        alias.set_alias(name, uri, store)


def test_without_a_tracking_server_nothing_is_set_and_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert alias.main(["--alias", "staging", "--model-uri", "models:/m/3"]) == 0
    assert capsys.readouterr().out == (
        "no tracking server configured (MLFLOW_TRACKING_URI): staging not set on models:/m/3, "
        "whose store is this machine's own\n"
    )
    with pytest.raises(PipelineError, match="give a registered version"):
        alias.main(["--alias", "staging", "--model-uri", "runs:/abc/model"])


def test_the_default_version_is_the_one_models_registry_json_records(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.params import load_paths
    from tests.support.manifests import ROOT

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    registry = load_paths().registry
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"model_uri": "models:/m/2"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert alias.main(["--alias", "staging"]) == 0
    assert capsys.readouterr().out.startswith("models:/m@staging is now version 2 on ")


def test_make_model_alias_sets_it_on_the_configured_server(store: str) -> None:
    from mlflow import MlflowClient

    from tests.support.manifests import ROOT

    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "model-alias",
            "ALIAS=production",
            "MODEL_URI=models:/m/1",
        ],
        cwd=ROOT,
        env=env | {"MLFLOW_TRACKING_URI": store, "UV_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "models:/m@production is now version 1" in done.stdout
    client = MlflowClient(tracking_uri=store)
    assert str(client.get_model_version_by_alias("m", "production").version) == "1"


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        ({}, "has no mlflow_model_uri label"),
        ({"mlflow_model_uri": ""}, "has no mlflow_model_uri label"),
        ({"mlflow_model_uri": "runs:/abc/model"}, "label: MODEL_URI='runs:/abc/model'"),
    ],
)
def test_an_image_without_a_registered_version_is_named(labels: dict[str, str], said: str) -> None:
    with pytest.raises(PipelineError, match=said):
        alias.labelled_model_uri("reg/m@sha256:" + "1" * 64, labels)
    assert alias.labelled_model_uri("i", {"mlflow_model_uri": "models:/m/4"}) == "models:/m/4"


def production_from_files(tmp_path: Path) -> list[str]:
    """Arguments naming this repository's overlays and an Argo CD Application that deploys
    production from the files checked out (HEAD), whatever branch this runs on."""
    from tests.support.manifests import ROOT

    argocd = tmp_path / "argocd"
    argocd.mkdir()
    (argocd / "production.yaml").write_text(
        "kind: Application\nspec:\n  source:\n    path: deploy/overlays/production\n"
    )
    return ["--overlays", str(ROOT / "deploy" / "overlays"), "--argocd", str(argocd)]


def test_overlay_sets_the_alias_on_the_version_its_image_was_built_from(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The overlay's image and its labels come from the repository's overlays and the registry
    (the act release scenario reads a real one); here the registry's answer is given."""
    from pipelines.release import manifests, trace
    from tests.support.manifests import ROOT

    asked = []

    def labels(image: str) -> dict[str, str]:
        asked.append(image)
        return {"mlflow_model_uri": "models:/m/2", "git_commit": "abc"}

    monkeypatch.setattr(trace, "inspect_image", labels)
    where = production_from_files(tmp_path)
    overlays = ROOT / "deploy" / "overlays"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert alias.main(["--alias", "production", "--overlay", "production", *where]) == 0
    assert capsys.readouterr().out.startswith("models:/m@production is now version 2 on ")
    assert asked == [str(manifests.show_image(manifests.overlay_file(overlays, "production")))]
    with pytest.raises(PipelineError, match="give MODEL_URI or OVERLAY, not both"):
        alias.main(["--alias", "production", "--overlay", "production", "--model-uri", "x"])


def test_an_overlay_image_the_registry_cannot_show_fails_only_with_a_server(
    store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A new repository's overlays name a placeholder image: without a server, promote.yml's
    alias job says so and passes; with one, the alias cannot be set and the job fails."""
    from pipelines.release import trace

    def unreachable(image: str) -> dict[str, str]:
        raise PipelineError(f"cannot inspect {image}: manifest unknown")

    monkeypatch.setattr(trace, "inspect_image", unreachable)
    where = production_from_files(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert alias.main(["--alias", "production", "--overlay", "production", *where]) == 0
    said = capsys.readouterr().out
    assert said.startswith(
        "no tracking server configured (MLFLOW_TRACKING_URI): production not set; the version "
        "production's image serves is unknown: "
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with pytest.raises(PipelineError, match="manifest unknown"):
        alias.main(["--alias", "production", "--overlay", "production", *where])
