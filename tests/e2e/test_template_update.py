"""Template updates, offline: an old template tagged v1, a model made from it and edited, a v2.

v1 is the template as it was before it learned tasks (PRE_TASKS: binary models only, no `task:`
in the schema), v2 is today's template with a few edits of its own. The update runs as the
repository's template-update workflow runs it, with act on a simulated GitHub, and arrives as one
pull request. v2 (a) changes a file the model did not touch, (b) changes a file the model edited,
(c) adds a file, (d) deletes one and (e) adds a params key with its migration.
`make update-template` must apply (a), (c), (d), show (b) as an inline conflict in that file
only, migrate (e), leave every other model-owned file as it was and not run the data and schema
bootstrap again; an unedited model updated to v2 must equal a fresh v2 copy. Once (b) is
resolved, `dvc repro` with the new code must give the same model: the same metrics, predictions
and gate, byte for byte.
"""

from __future__ import annotations

import difflib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import warnings
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core.model import BASELINE, META
from pipelines.params import EngineParams, ServeParams
from pipelines.template.migrate import add_key
from tests.support.template import files
from tools.act.simulation import WRITE_TOKEN, simulate
from tools.scratch import ScratchRepo, project_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The last template commit before tasks (binary only): what older model repositories were made
# from. The test needs the project's history (CI runs on a full clone).
PRE_TASKS = "c7d1566"
MODEL_OWNED = ("params.yaml", "schema.yaml", "README.md", "data.dvc", "dvc.lock")


def description(bentofile: str) -> str:
    """The bento's description line (v2 and the model each edit v1's)."""
    return next(line for line in bentofile.splitlines() if line.startswith("description: "))


V2_DESCRIPTION = 'description: "A binary classifier, built from schema.yaml (template v2)."'
MODEL_DESCRIPTION = 'description: "Loan default risk per application."'
MIGRATION = """  - version: "2"
    command: ["{{ _copier_python }}", "-m", "pipelines.template.migrate", "params.yaml",
              "alerts.window", "100"]
"""


@dataclass
class Scenario:
    template: ScratchRepo
    model: ScratchRepo
    before: dict[str, bytes]  # the model's files after its own edits, before the update
    update: str  # what `make update-template` printed


def small_table(path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    pd.DataFrame(
        {
            "Monthly Income": np.round(x * 1000 + 5000, 2),
            "home": rng.choice(["own", "rent", "other"], size=300),
            "default": np.where(x + rng.normal(scale=0.8, size=300) > 0.5, "yes", "no"),
        }
    ).to_csv(path, index=False)
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def pre_tasks_template(dest: Path) -> Path:
    """The template at PRE_TASKS, in a git repository of its own at ``dest``."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{PRE_TASKS}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            f"the template update from before tasks needs commit {PRE_TASKS} of the template's "
            f"history, which {ROOT} lacks (a shallow clone? `git fetch --unshallow`)"
        )
    archive = subprocess.run(
        ["git", "archive", PRE_TASKS], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    git = ["git", "-c", "user.name=scratch", "-c", "user.email=scratch@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", PRE_TASKS]):
        subprocess.run([*git, *args], cwd=dest, capture_output=True, check=True)
    return dest


def older_params(path: Path) -> None:
    from ruamel.yaml import YAML

    rt = YAML()
    document = rt.load(path.read_text())
    # the model's own value, one its model does not depend on (the model must stay the same)
    document["serve"]["timeout"] = 30
    del document["engine"]
    with path.open("w") as out:
        rt.dump(document, out)


def make_v2(template: ScratchRepo) -> None:
    """Today's template, with v2's edits, committed over v1 and tagged v2."""
    root = template.path
    template.run("git", "rm", "-rq", ".")
    for name in project_files(ROOT):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    edit(root / "Makefile", "\n.DEFAULT_GOAL", "\n# Template v2.\n.DEFAULT_GOAL")  # (a)
    bentofile = root / "bentofile.yaml"
    edit(bentofile, description(bentofile.read_text()), V2_DESCRIPTION)  # (b)
    (root / "docs/added-in-v2.md").write_text("# New in v2\n")  # (c)
    edit(root / "docs/index.md", "# The first ten minutes\n", "# The first ten minutes (v2)\n")
    (root / ".dvcignore").unlink()  # (d)
    add_key(root / "params.yaml", "alerts.window", 100)  # (e), with its migration:
    edit(root / "copier.yml", "_migrations:\n", "_migrations:\n" + MIGRATION)
    template.run("git", "add", "-A")
    template.run("git", "commit", "-qm", "template v2")
    template.run("git", "tag", "v2")


def copy(template: ScratchRepo, dest: Path, ref: str, tasks: bool) -> None:
    from copier import run_copy

    answers = {"name": "loan-risk", "data": "loans.csv", "target": "default"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(
            str(template.path),
            dest,
            data=answers,
            vcs_ref=ref,
            defaults=True,
            unsafe=True,
            skip_tasks=not tasks,
            quiet=True,
        )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    older = pre_tasks_template(tmp_path_factory.mktemp("pre-tasks"))
    template = ScratchRepo.create(tmp_path_factory.mktemp("template"), root=older)
    template.run("git", "tag", "v1")
    table = small_table(tmp_path_factory.mktemp("data") / "loans.csv")
    dest = tmp_path_factory.mktemp("models") / "loan-risk"
    # The real `make new-model` of the v1 template (reusing this environment: no new venv)
    template.env["UV_PROJECT_ENVIRONMENT"] = sys.prefix
    template.run(
        "make", "new-model", f"DATA={table}", "TARGET=default", "NAME=loan-risk", f"DEST={dest}"
    )
    model = ScratchRepo(dest, dict(template.env))
    bentofile = dest / "bentofile.yaml"
    edit(bentofile, description(bentofile.read_text()), MODEL_DESCRIPTION)  # the model edits (b)
    # params.yaml is model-owned: another serve.timeout, and no engine: (as a repository made
    # before the template had it), which the template's own migration adds back
    older_params(dest / "params.yaml")
    model.run("git", "commit", "-qam", "Describe the bento; a longer timeout")
    before = {f: (dest / f).read_bytes() for f in files(dest) if not f.startswith(".venv")}
    make_v2(template)
    # template-update.yml, run by act: `make update-template`, then its pull request
    github = tmp_path_factory.mktemp("github")
    with simulate(github, dest, environment=Path(sys.prefix)) as sim:
        token = {"TEMPLATE_UPDATE_TOKEN": WRITE_TOKEN}
        run = sim.on_dispatch("template-update.yml", {"version": "v2"}, secrets=token)
        assert run.jobs == {"update": "success"}, run.text()[-5000:]
        (pull,) = sim.api.pulls.values()
        assert pull["head"]["ref"] == "template-update"
        assert pull["title"] == "Template update to v2"
        assert "Resolve any conflict markers" in pull["body"]
        # The model's work tree becomes the pull request's branch
        model.run("git", "fetch", "-q", str(sim.origin), "template-update")
        model.run("git", "checkout", "-q", "FETCH_HEAD")
    return Scenario(template, model, before, run.text())


def test_a_change_to_an_untouched_file_arrives(scenario: Scenario) -> None:  # (a)
    assert "\n# Template v2.\n" in (scenario.model.path / "Makefile").read_text()


def test_a_change_to_an_edited_file_is_an_inline_conflict_in_that_file_only(
    scenario: Scenario,
) -> None:  # (b)
    bentofile = (scenario.model.path / "bentofile.yaml").read_text()
    assert "<<<<<<< before updating" in bentofile
    assert MODEL_DESCRIPTION in bentofile
    assert V2_DESCRIPTION in bentofile
    assert ">>>>>>> after updating" in bentofile
    assert "with conflicts to resolve" in scenario.update
    assert "bentofile.yaml" in scenario.update
    check = scenario.model.run("make", "--no-print-directory", "check-conflicts", check=False)
    assert check.returncode != 0
    assert "unresolved conflict markers in: bentofile.yaml\n" in check.stderr


def test_a_new_file_arrives_and_a_deleted_one_goes(scenario: Scenario) -> None:  # (c), (d)
    assert (scenario.model.path / "docs/added-in-v2.md").read_text() == "# New in v2\n"
    # the docs are the template's: an update refreshes them
    assert (
        (scenario.model.path / "docs/index.md")
        .read_text()
        .startswith("# The first ten minutes (v2)\n")
    )
    assert not (scenario.model.path / ".dvcignore").exists()


def test_a_new_params_key_arrives_by_its_migration_and_the_models_values_stay(
    scenario: Scenario,
) -> None:  # (e)
    params = yaml.safe_load((scenario.model.path / "params.yaml").read_text())
    assert params["alerts"] == {"window": 100}
    assert params["serve"]["timeout"] == 30  # the model's own value
    assert "migration: params.yaml alerts.window added" in scenario.update
    # The template's own migration: engine: is back, with the defaults its typed section has
    assert "migration: params.yaml engine added" in scenario.update
    assert EngineParams.model_validate(params["engine"]) == EngineParams()
    # and serve.coverage, which dvc.yaml's train stage reads since the template learned tasks
    assert "migration: params.yaml serve.coverage added" in scenario.update
    assert params["serve"]["coverage"] == ServeParams.model_fields["coverage"].default


def test_every_other_model_owned_file_is_unchanged_and_nothing_is_bootstrapped_again(
    scenario: Scenario,
) -> None:
    root = scenario.model.path
    for name in ("schema.yaml", "README.md", "data.dvc", "dvc.lock", "eval/metrics.json"):
        assert (root / name).read_bytes() == scenario.before[name], name
    owned = [
        f
        for f in scenario.before
        if f.startswith(("tests/model/", "deploy/overlays/", "deploy/argocd/", "data/"))
    ]
    assert owned
    for name in owned:
        assert (root / name).read_bytes() == scenario.before[name], name
    # params.yaml: the migrations add lines (keys), and every line of the model's stays but the
    # one that moved (evaluate.threshold, now train.threshold)
    params = (root / "params.yaml").read_text().splitlines()
    before = scenario.before["params.yaml"].decode().splitlines()
    edits = difflib.SequenceMatcher(None, before, params, autojunk=False).get_opcodes()
    assert {op for op, *_ in edits} <= {"equal", "insert", "delete"}
    deleted = [line for op, i, j, *_ in edits if op == "delete" for line in before[i:j]]
    assert [line.split("#")[0].strip() for line in deleted] == ["threshold: 0.5"]
    assert "Running task" not in scenario.update  # the bootstrap is a copy-only task
    # The update is one commit, proposed as a pull request
    log = scenario.model.run("git", "log", "--format=%s").stdout.splitlines()
    assert log == [
        "Template update to v2",
        "Describe the bento; a longer timeout",
        "The baseline of loan-risk: its first model's lock, metrics and gate bounds",
        "New model loan-risk: the template, data, schema and params",
    ]


def test_the_lock_is_the_new_versions_relocked_for_the_model(scenario: Scenario) -> None:
    lock = (scenario.model.path / "uv.lock").read_text()
    assert 'name = "loan-risk"' in lock
    answers = yaml.safe_load((scenario.model.path / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v2"


def test_an_unedited_model_updated_to_v2_equals_a_fresh_v2_copy(
    scenario: Scenario, tmp_path: Path
) -> None:
    template = scenario.template
    updated = ScratchRepo(tmp_path / "updated", dict(template.env))
    copy(template, updated.path, "v1", tasks=False)
    updated.run("git", "init", "-q", "-b", "main")
    updated.run("git", "add", "-A")
    updated.run("git", "commit", "-qm", "v1")
    updated.run(sys.executable, "-m", "pipelines.template.update", "--version", "v2")
    fresh = tmp_path / "fresh"
    copy(template, fresh, "v2", tasks=False)
    # uv.lock aside: a copy without its bootstrap task keeps the template's project name
    compared = (files(updated.path) | files(fresh)) - {"uv.lock"}
    different = [
        f
        for f in sorted(compared)
        if not (updated.path / f).is_file()
        or not (fresh / f).is_file()
        or (updated.path / f).read_bytes() != (fresh / f).read_bytes()
    ]
    # Every file the template owns is v2's. A model-owned one (copier.yml's _skip_if_exists) that
    # the template changed since v1 stays v1's, as an update never writes it; params.yaml gains
    # v2's keys through the migrations (without the comments v2 writes beside them)
    skipped = yaml.safe_load((template.path / "copier.yml").read_text())["_skip_if_exists"]
    for name in different:
        assert name.startswith(tuple(skipped)), name
        if name == "params.yaml":
            kept = yaml.safe_load((updated.path / name).read_text())
            assert kept == as_migrated(yaml.safe_load((fresh / name).read_text()), kept)
        else:
            assert (updated.path / name).read_bytes() == updated.run(
                "git", "show", f"HEAD:{name}"
            ).stdout.encode(), name


def as_migrated(fresh: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """v2's params as a migration brings them to a model of v1: the example's own decisions
    (its value model and gate rule, its groups, its threshold by value) are the example's; a
    migration adds the neutral defaults (no value model, no groups) and moves the threshold."""
    fresh = deepcopy(fresh)
    fresh["value"] = fresh["fairness"] = None
    fresh["gate"]["metrics"].pop("value_per_1000", None)
    fresh["train"]["threshold"] = kept["train"]["threshold"]
    fresh["train"].pop("threshold_folds", None)
    return fresh


def keep_before_updating(text: str) -> str:
    """A file's inline conflicts resolved to the repository's side (before updating)."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        if line.startswith(("<<<<<<< ", ">>>>>>> ")):
            keep = True
        elif line.startswith("======="):
            keep = False
        elif keep:
            kept.append(line)
    return "".join(kept)


def section(params: str, name: str) -> str:
    """A top-level section of params.yaml as written: its line and the indented ones under it."""
    lines = params.splitlines(keepends=True)
    start = lines.index(f"{name}:\n")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\n", "#")),
        len(lines),
    )
    return "".join(lines[start:end])


@pytest.fixture(scope="module")
def reproduced(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """The update's pull request, its conflict resolved as the model's owner would, reproduced.

    A copy of the model's repository: the scenario's stays as the update left it.
    """
    model = scenario.model.copy(tmp_path_factory.mktemp("resolved") / "loan-risk")
    bentofile = model.path / "bentofile.yaml"
    bentofile.write_text(keep_before_updating(bentofile.read_text()))
    model.run("make", "--no-print-directory", "check-conflicts")
    model.run("git", "commit", "-qam", "Keep the bento's own description")
    model.dvc("repro")
    return model


def test_a_model_from_before_tasks_is_read_as_binary(scenario: Scenario) -> None:
    from pipelines.schema import load_schema

    schema = scenario.model.path / "schema.yaml"
    assert "task" not in yaml.safe_load(schema.read_text())["target"]
    assert load_schema(schema).target.task == "binary"


def test_the_updated_model_reproduces_the_same_model_and_gate(
    scenario: Scenario, reproduced: ScratchRepo
) -> None:
    from pipelines.params import load_paths

    before = scenario.before
    root = reproduced.path
    paths = load_paths(root / "params.yaml")
    for path in (paths.metrics, paths.predictions, paths.segments):
        assert (root / path).read_bytes() == before[path.as_posix()], path
    model = [f for f in before if f.startswith(f"{paths.model.as_posix()}/")]
    assert model
    for name in model:
        if name.endswith(f"/{META}"):  # the update adds the fallback's prior, nothing else
            now = json.loads((root / name).read_text())
            assert "prior" in now, name
            now.pop("prior")
            assert now == json.loads(before[name]), name
        else:
            assert (root / name).read_bytes() == before[name], name
    assert (root / paths.model / BASELINE / META).is_file()  # the fallback baseline arrived
    # the gate's rules, as the model wrote them
    params = (root / "params.yaml").read_text()
    assert section(params, "gate") == section(before["params.yaml"].decode(), "gate")
    # dvc.lock: the same data and outputs, the same params but the one the update added (which
    # the train stage reads, and a binary model does not use); only the code's hashes moved.
    # Each repro logs a new MLflow run: the registry record and the card that quotes it differ.
    old = yaml.safe_load(before["dvc.lock"])["stages"]
    new = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(new) == set(old)
    run_records = {paths.registry.as_posix(), paths.card.as_posix()}
    # and the monitoring reference follows the template's binning rule (bins now merge until
    # each holds ten reference rows), not the model
    run_records.add(paths.reference.as_posix())
    # the model's folder gained the fallback baseline and the prior (checked file by file above)
    run_records.add(paths.model.as_posix())

    def kept(files: list[dict[str, object]]) -> list[dict[str, object]]:
        return [
            f
            for f in files
            if not str(f["path"]).startswith("pipelines/") and f["path"] not in run_records
        ]

    for name, stage in new.items():
        outs = kept(stage["outs"])
        if name == "evaluate":  # the fairness audit arrived, empty until the model names groups
            assert (root / paths.fairness).read_text() == "{}\n"
            outs = [o for o in outs if o["path"] != paths.fairness.as_posix()]
        assert outs == kept(old[name]["outs"]), name
        deps = kept(stage.get("deps", []))
        if name == "train":  # the threshold by value reads the amount column of the raw table
            deps = [d for d in deps if d["path"] != paths.raw.as_posix()]
        if name == "card":  # the card shows the fairness audit, empty here
            deps = [d for d in deps if d["path"] != paths.fairness.as_posix()]
        assert deps == kept(old[name].get("deps", [])), name
        params = stage.get("params", {}).get("params.yaml", {})
        assert params.pop("serve.coverage", None) == (0.9 if name == "train" else None), name
        valued = ("train", "evaluate", "card")  # value: arrived null, and fairness: too
        assert params.pop("value", "absent") == (None if name in valued else "absent"), name
        assert params.pop("fairness", "absent") == (None if name == "evaluate" else "absent")
        # the decision threshold moved from evaluate: to train:, its value kept
        was = {
            k: dict(v) if isinstance(v, dict) else v
            for k, v in old[name].get("params", {}).get("params.yaml", {}).items()
        }
        moved = was.get("evaluate", {}).pop("threshold", None)
        if "train" in params:
            assert params["train"].pop("threshold") == 0.5, name
            assert moved in (None, 0.5), name
        assert params == was, name
