"""``make new-model``: the repository of a new model, rendered from this template by copier.

Says the task (binary, multiclass or regression: inferred from the target unless TASK= says it)
and why, warns of features that alone predict the target (likely leaks), checks every argument
against the table first and writes nothing when one is wrong; then runs
``copier copy`` with the answers on the template's last commit (uncommitted changes are left
out), whose task (:mod:`pipelines.template.bootstrap`) writes the data, schema and params,
commits them, trains the first model from that commit and commits it as the baseline.
``copier copy --trust`` with the same answers (``--data name=... --data data=... ...``) gives
the same repository.

Usage: ``python -m pipelines.template.new_model --data FILE --target COLUMN --name NAME
--dest DIR [--positive VALUE] [--id COLUMN] [--task binary|multiclass|regression]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from pipelines.core.io import run_stage
from pipelines.core.leaks import likely_leaks
from pipelines.schema import columns_of
from pipelines.template.table import TableError, check_name, check_table, read_table

TEMPLATE = Path(__file__).resolve().parents[2]


def check_dest(dest: Path) -> Path:
    """DEST, if it is free: a missing or empty directory.

    Raises:
        TableError: DEST is a file or a directory with something in it.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TableError(f"DEST={dest} exists and is not an empty directory: choose a new path")
    return dest


def template_commit(template: Path) -> str:
    """The template's last commit, which the new repository is rendered from.

    Uncommitted changes and untracked files (a ``dvc plots`` page, a scratch table) are left
    out, and said in one line: the version the new repository records must exist for
    ``make update-template`` to start from it.

    Raises:
        TableError: The template is not a git repository with a commit.
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=template, capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "--verify", "HEAD^{commit}")
    if head.returncode != 0:
        raise TableError(f"{template} has no commit to render the new repository from")
    commit = head.stdout.strip()
    changed = git("status", "--porcelain").stdout.splitlines()
    if changed:
        print(
            f"note: {len(changed)} uncommitted change(s) in {template} are left out: the new "
            f"repository is rendered from its commit {commit[:12]}"
        )
    return commit


def main(argv: list[str] | None = None) -> int:
    """Check the arguments, then render the template into DEST."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the table (.csv or .parquet)")
    parser.add_argument("--target", required=True, help="the label column (two values)")
    parser.add_argument("--name", required=True, help="model name, e.g. credit-risk")
    parser.add_argument("--dest", type=Path, required=True, help="the new repository's folder")
    parser.add_argument("--positive", default="", help="the positive class, when not obvious")
    parser.add_argument(
        "--task", default="", help="binary, multiclass or regression (default: inferred)"
    )
    parser.add_argument("--id", dest="id_column", default="", help="the unique row id column")
    parser.add_argument(
        "--audit",
        default="",
        help="columns kept out of the model, audited for fairness, separated by commas",
    )
    parser.add_argument("--repository", default="OWNER/REPO", help="GitHub owner/name")
    parser.add_argument(
        "--code-owners",
        default="",
        help="who reviews the schema, params, production and workflows (.github/CODEOWNERS): "
        "GitHub handles separated by spaces (default: the repository's owner)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    name = check_name(args.name)
    dest = check_dest(args.dest.absolute())
    data = args.data.absolute()
    audit = columns_of(args.audit)
    table = check_table(
        read_table(data), args.target, args.positive, args.id_column, args.task, audit=audit
    )
    print(f"task: {table.task} ({table.reason})")
    for leak in likely_leaks(table.frame, table.schema):
        print(f"warning: {leak}")
    positive = f" (positive {table.positive!r})" if table.task == "binary" else ""
    print(
        f"new model {name!r} from {data.name}: {table.rows:,} rows, {len(table.schema.features)} "
        f"features, {table.task} target {table.target!r}{positive}, id {table.id!r}"
        + (" (added: the row number)" if table.id_added else "")
    )
    if not (TEMPLATE / "copier.yml").is_file():
        raise TableError(f"{TEMPLATE} is not the template repository (no copier.yml)")

    from copier import run_copy

    commit = template_commit(TEMPLATE)

    answers = {
        "name": name,
        "data": str(data),
        "target": args.target,
        "positive": args.positive,
        "task": table.task,  # the inferred task is said once, here, and kept in the answers
        "id": args.id_column,
        "audit": ",".join(audit),
        "repository": args.repository,
    } | ({"code_owners": args.code_owners} if args.code_owners else {})
    try:
        run_copy(
            str(TEMPLATE),
            dest,
            data=answers,
            vcs_ref=commit,  # the committed tree: a work tree's leftovers are not the template
            defaults=True,
            unsafe=True,  # the bootstrap task runs this template's own code
            quiet=True,
        )
    except ValueError as error:  # copier checks the answers before it writes anything
        if not str(error).startswith("Validation error for question"):
            raise
        question = str(error).split("'")[1]
        raise TableError(
            f"{question.upper()}={answers.get(question, '')!r}: {str(error).split(': ', 1)[1]}"
        ) from error
    print(f"made {dest} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    run_stage(main)
