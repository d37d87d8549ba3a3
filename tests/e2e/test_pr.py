"""A pull request, simulated: `make report BASE=main` on branches of a scratch repository."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines.params import load_paths
from pipelines.review.render import MARKER
from pipelines.schema import load_schema, read_raw
from tests.support.columns import breaking, new_ids
from tools.scratch import ScratchRepo

pytestmark = pytest.mark.slow

GATED = ("roc_auc", "pr_auc", "log_loss", "brier", "f1")


@dataclass(frozen=True)
class Run:
    """One `make report`: its process, verdict file and comment, and the PR's registry record."""

    done: subprocess.CompletedProcess[str]
    gate: dict
    comment: str
    registry: dict


@pytest.fixture(scope="module")
def project(trained_repo: ScratchRepo, tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """main with a trained model (a copy of the session's), outputs committed."""
    repo = trained_repo.copy(tmp_path_factory.mktemp("pr") / "project")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "trained model")
    return repo


def switch(repo: ScratchRepo, branch: str) -> None:
    """Check out a branch and its DVC outputs (from the cache)."""
    repo.run("git", "checkout", "-qf", branch)
    repo.dvc("checkout", "--force", "-q")


def open_pr(repo: ScratchRepo, branch: str, edits: dict[str, str]) -> None:
    """Branch off main, edit params.yaml (regex: replacement), reproduce and commit."""
    switch(repo, "main")
    repo.run("git", "checkout", "-qb", branch)
    params = repo.path / "params.yaml"
    text = params.read_text()
    for pattern, replacement in edits.items():
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
        assert count == 1, pattern
    params.write_text(text)
    repo.dvc("repro")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", branch)


def report(repo: ScratchRepo, base: str = "main") -> Run:
    """`make report BASE=base`. Make turns a failed recipe into its own exit 2; the report's
    exit code is in the verdict file and in make's "Error N" line."""
    done = repo.run("make", "report", f"BASE={base}", check=False)
    return Run(
        done,
        json.loads(repo.read("reports/gate.json")),
        repo.read("reports/pr-comment.md").decode(),
        json.loads(repo.read("models/registry.json")),
    )


def table_row(comment: str, name: str) -> list[str]:
    row = next(line for line in comment.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.fixture(scope="module")
def worse(project: ScratchRepo) -> Run:
    """A pull request with clearly worse params: 5 stumps instead of 300 trees of depth 3."""
    open_pr(
        project,
        "worse",
        {
            r"^    n_estimators: 300": "    n_estimators: 5",
            r"^    max_depth: 3": "    max_depth: 1",
        },
    )
    return report(project)


@pytest.fixture(scope="module")
def reseeded(project: ScratchRepo) -> Run:
    """A pull request that only changes train.seed."""
    open_pr(project, "reseed", {r"^(train:\n(?:  .*\n)*?)  seed: 42": r"\1  seed: 7"})
    return report(project)


def test_worse_params_fail_the_gate_naming_the_metrics(worse: Run) -> None:
    assert worse.done.returncode != 0, worse.done.stderr
    assert "report] Error 1" in worse.done.stderr  # the report exited 1: the gate failed
    assert worse.gate["exit_code"] == 1
    verdict = worse.comment.splitlines()[0]
    assert verdict.startswith("❌ **Gate failed** against `main`")
    # Which metrics regress depends on the table; the verdict names each one that did
    regressed = [m for m, r in worse.gate["metrics"].items() if r["verdict"] == "regressed"]
    assert regressed
    assert f"regressed beyond tolerance: {', '.join(regressed)}" in verdict
    for name in regressed:
        assert table_row(worse.comment, name)[-1] == "🔴 regressed"
    assert verdict in worse.done.stdout.splitlines()
    assert worse.gate["verdict"] == "fail"
    assert worse.gate["mode"] == "paired"
    assert worse.gate["base"]["source"] == "DVC"
    assert "| train.xgboost.n_estimators | 300 | 5 |" in worse.comment
    assert "report: getting the outputs of main" in worse.done.stderr
    assert worse.comment.rstrip().endswith(MARKER)


def test_the_comment_shows_the_numbers_of_the_metrics_files(
    project: ScratchRepo, worse: Run
) -> None:
    base = json.loads(project.run("git", "show", "main:eval/metrics.json").stdout)
    pr = json.loads(project.run("git", "show", "worse:eval/metrics.json").stdout)
    assert base != pr
    for name in GATED:
        cells = table_row(worse.comment, name)
        assert float(cells[2]) == base[name], name
        assert float(cells[3]) == pr[name], name
        assert worse.gate["metrics"][name]["base"] == base[name]
        assert worse.gate["metrics"][name]["pr"] == pr[name]
    assert f"| MLflow run | `{worse.registry['run_id']}` |" not in worse.comment  # base first
    if "#### Fairness" in worse.comment:  # BASE's audit is fetched with its other outputs
        assert "n/a →" not in worse.comment
    assert f"` | `{worse.registry['run_id']}` |" in worse.comment
    assert f"` | `{worse.registry['model_uri']}` |" in worse.comment
    # ROC and precision-recall, and with a value model the value curve against the threshold
    valued = yaml.safe_load((project.path / "params.yaml").read_text()).get("value") is not None
    assert worse.comment.count("xychart-beta") == 2 + valued
    assert ("by threshold (base at " in worse.comment) == valued


def test_another_train_seed_passes(reseeded: Run) -> None:
    assert reseeded.done.returncode == 0, reseeded.done.stdout + reseeded.done.stderr
    assert reseeded.comment.startswith("✅ **Gate passed** against `main`")
    assert reseeded.gate["verdict"] == "pass"
    assert reseeded.gate["mode"] == "paired"
    assert "| train.seed | 42 | 7 |" in reseeded.comment
    assert all(m["verdict"] != "regressed" for m in reseeded.gate["metrics"].values())
    assert reseeded.gate["metrics"]["roc_auc"]["delta"] != 0  # a different model all the same


def test_base_missing_from_the_cache_is_reproduced_in_a_worktree(
    project: ScratchRepo, reseeded: Run, tmp_path: Path
) -> None:
    switch(project, "reseed")
    # An empty DVC cache, as on a fresh CI runner: main's outputs are nowhere. The raw table is
    # on a DVC remote set with --local (where credentials go), as a table kept only in DVC is.
    project.dvc("remote", "add", "--local", "-d", "data", str(tmp_path / "remote"))
    project.dvc("push", "data.dvc")
    project.dvc("cache", "dir", "--local", str(tmp_path / "empty-cache"))
    try:
        again = report(project)
    finally:
        project.dvc("cache", "dir", "--local", "--unset")
        project.dvc("remote", "remove", "--local", "data")
    assert again.done.returncode == 0, again.done.stderr
    assert "reproducing main in a worktree" in again.done.stderr
    assert "restored by DVC" in again.done.stderr  # BASE's table, from the workspace's remote
    assert "Running stage 'train'" in again.done.stderr
    assert "Running stage 'register'" not in again.done.stderr  # no model version for BASE
    assert again.gate["base"]["source"] == "reproduced"
    # main reproduces the same model, so the comparison is the one made with the cached outputs
    assert again.gate["metrics"] == reseeded.gate["metrics"]
    worktrees = project.run("git", "worktree", "list", "--porcelain").stdout
    assert worktrees.count("worktree ") == 1
    assert "reproduced from its code and data in a temporary worktree" in again.comment
    if "#### Fairness" in again.comment:  # BASE's audit, reproduced too
        assert "n/a →" not in again.comment
    assert (tmp_path / "empty-cache").exists()  # BASE's outputs were cached for the next time


def test_the_first_model_is_held_to_the_floors_only(project: ScratchRepo, tmp_path: Path) -> None:
    switch(project, "main")
    # A base commit without a model: main's tree minus dvc.lock and the evaluation files
    env = project.env | {"GIT_INDEX_FILE": str(tmp_path / "index")}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project.path, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    git("read-tree", "main")
    git("rm", "-q", "--cached", "-r", "dvc.lock", "eval")
    commit = git("commit-tree", git("write-tree"), "-p", "main", "-m", "before the first model")
    git("branch", "-f", "nomodel", commit)

    first = report(project, "nomodel")
    assert first.done.returncode == 0, first.done.stderr
    assert first.comment.startswith("✅ **Gate passed (first model)**: `nomodel`")
    assert first.gate["mode"] == "first model"
    assert first.gate["base"]["source"] == "none"
    metrics = json.loads(project.read("eval/metrics.json"))
    for name in GATED:
        assert first.gate["metrics"][name]["verdict"] == "new"
        assert first.gate["metrics"][name]["base"] is None
        assert first.gate["metrics"][name]["pr"] == metrics[name]


def test_what_cannot_be_compared_exits_2_with_the_reason(project: ScratchRepo) -> None:
    switch(project, "main")
    unknown = report(project, "no-such-branch")
    assert unknown.done.returncode == 2
    assert "report] Error 2" in unknown.done.stderr
    assert unknown.gate["exit_code"] == 2
    assert "error: could not compare with no-such-branch: 'no-such-branch' is not a commit" in (
        unknown.done.stderr
    )
    assert unknown.gate["verdict"] == "error"
    assert "git fetch" in unknown.gate["reason"]
    assert unknown.comment.startswith("⚠️ **Could not compare**")

    params = project.path / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("max_depth: 3", "max_depth: 4"))
    try:
        stale = report(project)
    finally:
        params.write_text(original)
    assert "report] Error 2" in stale.done.stderr
    assert "outputs are stale (stages train" in stale.gate["reason"]
    assert "run `dvc repro` first" in stale.gate["reason"]
    assert any(
        line.startswith("error: could not compare") for line in stale.done.stderr.splitlines()
    )


@dataclass(frozen=True)
class Refreshed:
    """`make refresh-data` on a branch: its output, and main's and the branch's raw tables."""

    done: subprocess.CompletedProcess[str]
    before: pd.DataFrame
    after: pd.DataFrame
    served: int
    labelled: int


def served_rows(repo: ScratchRepo, folder: Path, rows: int = 300) -> tuple[Path, Path, int]:
    """Served rows made from the table's own rows under new ids, and late labels for most.

    One labelled row breaks the schema (an unknown category or a value above its maximum).
    Returns the rows' file, the labels' file and how many rows have a label.
    """
    paths = load_paths(repo.path / "params.yaml")
    schema = load_schema(repo.path / paths.schema_)
    raw = read_raw(repo.path / paths.raw)
    served = raw.sample(rows, random_state=0).reset_index(drop=True)
    served[schema.id] = new_ids(raw[schema.id], rows)
    name, feature = next(iter(schema.features.items()))
    served[name] = served[name].astype(object)
    served.loc[0, name] = breaking(feature)
    labelled = rows - rows // 10  # the rest have no label yet
    folder.mkdir()
    served.drop(columns=[schema.target.column]).to_csv(folder / "rows.csv", index=False)
    labels = served.iloc[:labelled].rename(columns={schema.id: "id", schema.target.column: "label"})
    labels[["id", "label"]].to_csv(folder / "labels.csv", index=False)
    return folder / "rows.csv", folder / "labels.csv", labelled


@pytest.fixture(scope="module")
def refreshed(project: ScratchRepo, tmp_path_factory: pytest.TempPathFactory) -> Refreshed:
    """A branch whose raw table gained labelled production rows (`make refresh-data`)."""
    switch(project, "main")
    project.run("git", "checkout", "-qb", "refresh")
    rows, labels, labelled = served_rows(project, tmp_path_factory.mktemp("served") / "rows")
    raw = project.path / load_paths(project.path / "params.yaml").raw
    before = read_raw(raw)
    done = project.run("make", "refresh-data", f"ROWS={rows}", f"LABELS={labels}", check=False)
    return Refreshed(done, before, read_raw(raw), 300, labelled)


def test_refresh_data_records_the_labelled_rows_as_a_new_dvc_version(
    project: ScratchRepo, refreshed: Refreshed
) -> None:
    done = refreshed.done
    assert done.returncode == 0, done.stdout + done.stderr
    paths = load_paths(project.path / "params.yaml")
    kept = refreshed.labelled - 1  # one breaks the schema
    assert len(refreshed.after) == len(refreshed.before) + kept
    assert list(refreshed.after.columns) == list(refreshed.before.columns)
    assert refreshed.after.iloc[: len(refreshed.before)].equals(refreshed.before)
    assert f"{refreshed.labelled - kept} labelled rows break schema.yaml and were dropped" in (
        done.stdout
    )
    assert f"{refreshed.served - refreshed.labelled} without one are not training data" in (
        done.stdout
    )
    # A new DVC data version: only the .dvc file changes in git, its table is in the cache
    changed = project.run("git", "diff", "--name-only").stdout.split()
    assert changed == [str(paths.data_dvc)]
    status = project.dvc("status", str(paths.data_dvc), "--json").stdout
    assert json.loads(status) == {}
    main_md5 = yaml.safe_load(project.run("git", "show", f"main:{paths.data_dvc}").stdout)
    new_md5 = yaml.safe_load((project.path / paths.data_dvc).read_text())
    assert new_md5["outs"][0]["md5"] != main_md5["outs"][0]["md5"]
    assert "#### Training data refreshed" in project.read("reports/refresh.md").decode()


@pytest.fixture(scope="module")
def new_data(project: ScratchRepo, refreshed: Refreshed) -> Run:
    """The refreshed data reproduced and committed on its branch, then reported against main."""
    assert refreshed.done.returncode == 0, refreshed.done.stderr
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "retrain on labelled production rows")
    return report(project)


def test_a_data_change_is_gated_paired_on_the_new_holdout(
    project: ScratchRepo, new_data: Run
) -> None:
    gate, comment = new_data.gate, new_data.comment
    assert gate["exit_code"] in (0, 1), new_data.done.stderr
    assert gate["mode"] == "paired on new holdout", gate["notes"]
    holdout = gate["holdout"]
    predictions = pd.read_csv(project.path / load_paths(project.path / "params.yaml").predictions)
    # The PR's test rows, scored by main's model. The split goes by a hash of the id: rows added
    # to the table leave every other row on its side, so main's model trained on none of them.
    assert holdout["rows"] == len(predictions)
    assert holdout["excluded"] == 0
    assert gate["rows"] == {"pr": holdout["rows"], "base": holdout["rows"]}
    assert "scoring BASE's model on the PR's test rows" in new_data.done.stderr
    assert "paired on the new holdout" in comment
    assert f"({gate['mode']} bootstrap over {holdout['rows']:,} test rows)" in comment or (
        "Gate failed" in comment
    )
    assert "both measured on the PR's test rows that BASE did not train on" in comment
    # main's values are its model's on the new rows, not its metrics file's
    metrics = load_paths(project.path / "params.yaml").metrics
    main = json.loads(project.run("git", "show", f"main:{metrics}").stdout)
    assert gate["metrics"]["roc_auc"]["base"] != main["roc_auc"]
    assert "**changed**" in comment  # the data section says the data changed
