"""The template renders: the example is its own render, and another model's render is clean."""

from __future__ import annotations

from pathlib import Path

import pathspec
import pytest

from tests.support.template import (
    COPIER,
    EXAMPLE_ANSWERS,
    OTHER_ANSWERS,
    ROOT,
    example_words,
    files,
    render,
)
from tools.scratch import project_files

MODEL_OWNED = pathspec.PathSpec.from_lines("gitignore", COPIER["_skip_if_exists"])
EXCLUDED = pathspec.PathSpec.from_lines("gitignore", COPIER["_exclude"])
TWINS = sorted(
    f.removesuffix(".jinja") for f in project_files() if f.endswith(".jinja") and "{{" not in f
)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("example"), EXAMPLE_ANSWERS)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("other"), OTHER_ANSWERS)


def test_rendering_the_example_answers_gives_this_repository_byte_for_byte(example: Path) -> None:
    """Template and example cannot drift apart: every rendered file is the repository's own."""
    rendered = files(example) - {".copier-answers.yml"}
    # README.md and model_card.md are the exceptions by design: the example's tell the
    # template's story and the example model's intended use; a new model gets the neutral text.
    different = [
        f
        for f in sorted(rendered - {"README.md", "model_card.md"})
        if (example / f).read_bytes() != (ROOT / f).read_bytes()
    ]
    assert not different, f"the template renders these unlike the example: {different}"
    # ... and nothing of the repository is lost but what copier.yml excludes on purpose
    tracked = {f for f in project_files() if not f.endswith(".jinja")}
    missing = {f for f in tracked - rendered if not EXCLUDED.match_file(f)}
    assert not missing, f"files of the repository that the template does not render: {missing}"


def test_every_twin_renders_over_the_example_file(example: Path) -> None:
    """A ``X.jinja`` beside ``X`` is what a new model gets; the example's ``X`` matches it."""
    assert {"pyproject.toml", "deploy/base/kustomization.yaml", "README.md"} <= set(TWINS)
    for twin in TWINS:
        assert (example / twin).is_file(), twin
        assert "{{" not in (example / twin).read_text(), f"{twin}: unrendered Jinja"


def test_the_model_owns_its_data_params_schema_tests_and_overlays() -> None:
    for owned in ("params.yaml", "schema.yaml", "README.md", "data.dvc", "dvc.lock"):
        assert MODEL_OWNED.match_file(owned), owned
    for owned in ("tests/model/test_behaviour.py", "deploy/overlays/staging/kustomization.yaml"):
        assert MODEL_OWNED.match_file(owned), owned
    for template in (
        "pipelines/stages/train.py",
        "Makefile",
        "dvc.yaml",
        "deploy/base/service.yaml",
    ):
        assert not MODEL_OWNED.match_file(template), template
    for template in (".github/workflows/pr.yml", "tests/review/test_gate.py", "pyproject.toml"):
        assert not MODEL_OWNED.match_file(template), template


def test_the_docs_are_the_templates_and_travel_with_updates(other: Path) -> None:
    """docs/ and mkdocs.yml are rendered into every model and refreshed by a template update."""
    for page in ("docs/index.md", "mkdocs.yml"):
        assert not MODEL_OWNED.match_file(page), page
        assert not EXCLUDED.match_file(page), page
        assert (other / page).read_bytes() == (ROOT / page).read_bytes(), page


def test_another_model_gets_its_names_and_nothing_of_the_example(other: Path) -> None:
    rendered = files(other)
    for example_only in ("data.dvc", "dvc.lock", "schema.yaml", "eval/metrics.json"):
        assert example_only not in rendered
    assert not any(f.startswith("eval/plots") for f in rendered)
    assert "tests/model/test_churn.py" not in rendered
    assert 'name = "credit-risk"' in (other / "pyproject.toml").read_text()
    assert "namePrefix: credit-risk-" in (other / "deploy/base/kustomization.yaml").read_text()
    staging = (other / "deploy/overlays/staging/kustomization.yaml").read_text()
    assert "namespace: credit-risk-staging" in staging
    assert "newName: ghcr.io/acme/credit-risk" in staging
    assert (
        "https://github.com/acme/credit-risk.git"
        in (other / "deploy/argocd/project.yaml").read_text()
    )
    assert (other / "README.md").read_text().startswith("# credit-risk:")
    pattern = example_words()
    leftovers = []
    for name in sorted(rendered):
        if name in ("params.yaml", "uv.lock"):  # the bootstrap task rewrites both
            continue
        text = (other / name).read_bytes().decode("utf-8", errors="replace")
        leftovers += [f"{name}: {m.group(0)!r}" for m in pattern.finditer(text)]
    assert not leftovers, "\n".join(leftovers)


def test_the_answers_file_records_the_answers_and_the_template_version(other: Path) -> None:
    import yaml

    answers = yaml.safe_load((other / ".copier-answers.yml").read_text())
    assert {k: answers[k] for k in OTHER_ANSWERS} == OTHER_ANSWERS
    assert answers["_src_path"] == str(ROOT)
    assert answers["_commit"]
