"""`make new-model` refuses bad arguments with one line saying what to do, and writes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.params import FairnessParams
from pipelines.template import new_model
from pipelines.template.bootstrap import fairness_section
from pipelines.template.table import (
    ROW_ID,
    TableError,
    check_table,
    data_file,
    positive_class,
)
from tests.support.columns import ROOT
from tests.support.manifests import make


def table(rows: int = 60, **columns: object) -> pd.DataFrame:
    """A small valid table: a numeric and a categorical feature, a yes/no target, an id."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "key": range(100, 100 + rows),
            "x": rng.normal(size=rows),
            "colour": rng.choice(["red", "blue"], size=rows),
            "label": ["yes", "no"] * (rows // 2),
        }
    )
    return frame.assign(**columns)


def write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from pipelines.core.io import run_stage

    with pytest.raises(SystemExit) as exited:
        run_stage(lambda: new_model.main(list(args)))
    return int(exited.value.code or 0), capsys.readouterr().err


def bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    good = write(tmp / "good.csv", table())
    three = write(tmp / "three.csv", table(label=["a", "b", "c"] * 20))
    one = write(tmp / "one.csv", table(label="yes"))
    rare = write(tmp / "rare.csv", table(rows=200, label=["a", "b"] * 95 + ["c"] * 5 + ["a"] * 5))
    many = write(tmp / "many.csv", table(rows=600, label=[f"k{i % 60}" for i in range(600)]))
    numbers = table().assign(label=np.linspace(0.5, 9.5, 60))
    infinite = write(tmp / "infinite.csv", numbers.assign(label=[np.inf, *numbers["label"][1:]]))
    numbers = write(tmp / "numbers.csv", numbers)
    codes = write(tmp / "codes.csv", table(label=["good", "bad"] * 30))
    ids = write(tmp / "ids.csv", table(key=1))
    small = write(tmp / "small.csv", table(rows=20))
    empty = tmp / "empty.csv"
    empty.write_text("")
    header = write(tmp / "header.csv", table().head(0))
    text = tmp / "table.txt"
    text.write_text("a,b\n1,2\n")
    occupied = tmp / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("mine")
    base = ["--data", str(good), "--target", "label", "--name", "m1", "--dest", str(tmp / "new")]

    def but(**changed: str) -> list[str]:
        args = dict(zip(base[::2], base[1::2], strict=True))
        args |= {f"--{k}": v for k, v in changed.items()}
        return [item for pair in args.items() for item in pair]

    return [
        (but(target="labl"), "TARGET='labl' is not a column of the table; its columns: 'key'"),
        (but(data=str(three)), "too few rows per class: 60 rows for 3 classes of 'label'"),
        (
            but(data=str(three), task="binary"),
            "must have exactly two values for a binary classifier; it has 3",
        ),
        (but(data=str(one)), "TARGET='label' is constant ('yes'): nothing to learn"),
        (but(data=str(rare)), "a class of 'label' has fewer than 10 rows: 'c' (5 rows)"),
        (but(data=str(many)), "TARGET='label' has 60 classes, more than 50"),
        (but(data=str(infinite)), "1 values of 'label' are infinite"),
        (
            but(data=str(three), task="regression"),
            "TARGET='label' is not numeric (str): a regression needs numbers",
        ),
        (but(task="ordinal"), "TASK='ordinal': use one of binary, multiclass, regression"),
        (
            but(data=str(numbers), positive="1"),
            "POSITIVE='1' is for a binary target; this one is regression",
        ),
        (but(data=str(codes)), "'label' has the values 'bad', 'good': say which is the positive"),
        (
            but(positive="maybe"),
            "POSITIVE='maybe' is not a value of 'label': use one of 'no', 'yes'",
        ),
        (but(id="key", data=str(ids)), "ID='key' is not a unique id: 0 missing and 60 duplicated"),
        (but(id="nope"), "ID='nope' is not a column of the table"),
        (but(id="label"), "ID='label' is the target"),
        (but(audit="colour, nope"), "AUDIT='nope' is not a column of the table"),
        (but(audit="label"), "AUDIT='label' is the target or the id: name another column"),
        (but(data=str(small)), "the table has 20 rows: a model needs at least 50"),
        (but(data=str(empty)), "is empty: give a table with a header and rows"),
        (but(data=str(header)), "has no rows"),
        (but(data=str(text)), "give a .csv or .parquet file"),
        (but(data=str(tmp / "missing.csv")), "no such file"),
        (but(name="Churn_Model"), "NAME='Churn_Model': use 2 to 40 lower-case letters"),
        (but(name="m-"), "NAME='m-'"),
        (but(dest=str(occupied)), "exists and is not an empty directory: choose a new path"),
        (but(dest=str(good)), "exists and is not an empty directory"),
        (
            but(**{"code-owners": "acme"}),
            "CODE_OWNERS='acme': give GitHub handles separated by spaces: @user or @org/team",
        ),
    ]


CASES = [
    "unknown target",
    "three classes, few rows",
    "three classes as binary",
    "one class",
    "a rare class",
    "too many classes",
    "an infinite number",
    "text as regression",
    "unknown task",
    "positive of a regression",
    "positive needed",
    "positive not a value",
    "duplicate id",
    "unknown id",
    "id is the target",
    "unknown audit column",
    "audit column is the target",
    "too few rows",
    "empty file",
    "header only",
    "not a table file",
    "missing file",
    "bad name",
    "name ends with a dash",
    "dest not empty",
    "dest is a file",
    "code owners not handles",
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
def test_a_bad_argument_gets_one_line_and_nothing_is_written(
    case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = bad_cases(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(capsys, *args)
    assert code == 1
    assert err.startswith("error: ")
    assert expected in err
    assert err.count("\n") == 1, err  # one line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no DEST, nothing else


def test_make_new_model_without_its_arguments_says_how_to_call_it() -> None:
    done = make("new-model", "DATA=x.csv")
    assert done.returncode != 0
    assert "usage: make new-model DATA=<table.csv|.parquet> TARGET=<label column>" in done.stderr


@pytest.mark.parametrize(
    ("values", "positive", "chosen"),
    [
        (["No", "Yes"], "", "Yes"),
        ([0, 1], "", 1),
        (["false", "true"], "", "true"),
        (["N", "Y"], "", "Y"),
        (["bad", "good"], "bad", "bad"),
        ([1, 2], "2", 2),
        (["benign", "malignant"], "malignant", "malignant"),
    ],
)
def test_the_positive_class_is_the_obvious_one_or_the_given_one(values, positive, chosen) -> None:
    assert positive_class(values, "y", positive) == chosen


def test_a_table_without_an_id_gets_row_numbers_as_its_id() -> None:
    frame = table().drop(columns="key")
    checked = check_table(frame, "label")
    assert checked.id == ROW_ID
    assert checked.id_added
    assert checked.frame[ROW_ID].tolist() == list(range(1, 61))
    assert checked.frame.drop(columns=ROW_ID).equals(frame)  # the rest as it was
    assert ROW_ID not in checked.schema.features
    with_id = check_table(table(), "label", id_column="key")
    assert not with_id.id_added
    assert with_id.schema.id == "key"


def test_audit_columns_stay_in_the_data_out_of_the_features_and_are_audited() -> None:
    checked = check_table(table(), "label", id_column="key", audit=("colour",))
    assert list(checked.schema.features) == ["x"]
    assert list(checked.schema.audit) == ["colour"]
    assert "colour" in checked.frame.columns  # the data keeps it: validated, audited
    section = fairness_section(checked.schema)
    assert section is not None
    assert section["sensitive"] == ["colour"]
    assert section["max_gap"] == {}  # the bounds are the owner's to set
    FairnessParams.model_validate(section)
    assert fairness_section(check_table(table(), "label", id_column="key").schema) is None


def test_a_table_that_has_a_row_id_column_must_say_whether_it_is_the_id() -> None:
    with pytest.raises(new_model.TableError, match="has a 'row_id' column but no ID was given"):
        check_table(table().rename(columns={"key": ROW_ID}), "label")


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/x/credit_data.csv", "credit_data.csv"),
        ("/x/My Table (v2).parquet", "my-table-v2.csv"),
        ("/x/Überblick.csv", "uberblick.csv"),
        ("/x/---.csv", "table.csv"),
    ],
)
def test_the_data_file_name_is_safe(source: str, name: str) -> None:
    assert data_file(Path(source)) == name


def test_params_edits_keep_the_file_and_quote_awkward_names(tmp_path: Path) -> None:
    import shutil

    import yaml

    from pipelines.template.bootstrap import edit_params

    params = Path(shutil.copy(Path(__file__).parents[2] / "params.yaml", tmp_path))
    names = ["Región", "Has Card?", "plain", "a: b", "[x]"]
    edit_params(params, {("evaluate", "segments"): names, ("data",): {}, ("paths", "raw"): "d.csv"})
    document = yaml.safe_load(params.read_text())
    assert document["evaluate"]["segments"] == names
    assert document["data"] == {}
    assert document["paths"]["raw"] == "d.csv"
    text = params.read_text()
    assert "# Paths are said once, here" in text  # comments kept
    assert "data: {}\n\nfeaturize:" in text  # and the blank line between sections


def test_gate_bounds_sit_a_margin_from_the_first_model() -> None:
    from pipelines.template.bootstrap import gate_bounds

    metrics = {"roc_auc": 0.8634, "log_loss": 0.4005, "brier": 0.1265, "f1": 0.03}
    better = {"roc_auc": "higher", "log_loss": "lower", "brier": "lower", "f1": "higher"}
    assert gate_bounds(metrics, better) == {
        "roc_auc": {"floor": 0.81},
        "log_loss": {"ceiling": 0.46},
        "brier": {"ceiling": 0.15},
        "f1": {"floor": 0.0},
    }


def test_the_new_repository_is_rendered_from_the_templates_last_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A work tree's leftovers (an edit, a `dvc plots` page) never reach a new repository."""
    from copier import run_copy

    template = tmp_path / "template"
    template.mkdir()
    (template / "copier.yml").write_text("_answers_file: .copier-answers.yml\n")
    (template / "kept.txt").write_text("committed\n")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=template, capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "v1")
    assert new_model.template_commit(template) == git("rev-parse", "HEAD")
    assert capsys.readouterr().out == ""  # a clean template: nothing to say

    (template / "kept.txt").write_text("edited, not committed\n")
    (template / "index.html").write_text("<html>left by dvc plots diff</html>\n")
    commit = new_model.template_commit(template)
    said = capsys.readouterr().out
    assert commit == git("rev-parse", "HEAD")
    assert said.count("\n") == 1, said  # one line, naming the commit
    assert "2 uncommitted change(s)" in said
    assert commit[:12] in said
    run_copy(str(template), tmp_path / "new", vcs_ref=commit, defaults=True, quiet=True)
    assert (tmp_path / "new" / "kept.txt").read_text() == "committed\n"
    assert not (tmp_path / "new" / "index.html").exists()


def test_dvc_plots_pages_are_not_the_templates_files() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=new_model.TEMPLATE, check=False
    )
    assert done.returncode == 0, "dvc plots writes dvc_plots/: .gitignore must leave it out"


def test_a_template_without_a_commit_is_refused(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(TableError, match="no commit"):
        new_model.template_commit(tmp_path)


@pytest.mark.parametrize(
    ("task", "said"),
    [
        ("regression", "inferred: 'Sales' holds numbers with 336 distinct values"),
        ("multiclass", "inferred: 'class' holds text with 4 distinct values"),
    ],
)
def test_the_task_of_a_real_table_is_inferred_and_said(task: str, said: str) -> None:
    from tests.support.tasks import TABLES
    from tests.support.tasks import table as real_table

    checked = check_table(real_table(task), TABLES[task][2], id_column="rownames")
    assert checked.task == task
    assert checked.schema.target.task == task
    assert checked.reason.startswith(said)
    assert checked.positive is None
    forced = check_table(real_table(task), TABLES[task][2], id_column="rownames", task=task)
    assert forced.reason.startswith(f"TASK={task} (as inferred")


def test_a_regressions_gate_scales_with_its_first_model() -> None:
    from pipelines.template.bootstrap import gate_bounds, task_rules

    metrics = {"rmse": 1234.5, "mae": 987.0, "r2": 0.81, "coverage": 0.91}
    rules = task_rules("regression", metrics)
    assert rules["rmse"] == {"tolerance": 25.0}  # 2% of 1234.5, two digits, rounded up
    assert rules["mae"] == {"tolerance": 20.0}
    assert rules["r2"] == {"tolerance": 0.02}
    bounds = gate_bounds(metrics, {"rmse": "lower", "r2": "higher", "coverage": "higher"})
    assert bounds == {
        "rmse": {"ceiling": 1600.0},
        "r2": {"floor": 0.71},
        "coverage": {"floor": 0.86},
    }


def test_plots_a_task_does_not_write_are_dropped_from_dvc_yaml_and_the_rest_kept(
    tmp_path: Path,
) -> None:
    import yaml

    from pipelines.template.bootstrap import NOT_PLOTTED, drop_plots

    dvc = tmp_path / "dvc.yaml"
    dvc.write_text((ROOT / "dvc.yaml").read_text())
    drop_plots(dvc, NOT_PLOTTED["regression"])
    before = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    after = yaml.safe_load(dvc.read_text())
    titles = [next(iter(plot)) for plot in after["plots"]]
    dropped = NOT_PLOTTED["regression"]
    assert titles == [t for t in (next(iter(p)) for p in before["plots"]) if t not in dropped]
    assert {"Calibration", "Feature importance"} <= set(titles)
    assert after["stages"] == before["stages"]
