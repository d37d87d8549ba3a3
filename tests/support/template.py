"""The template's own test helpers: rendering this repository with copier, the example's words.

Only tests a model repository does not get use it (copier.yml leaves it out with them).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COPIER = yaml.safe_load((ROOT / "copier.yml").read_text())
SCHEMA = yaml.safe_load((ROOT / "schema.yaml").read_text())

# The answers that render this repository's own files: the example is the template's render.
EXAMPLE_ANSWERS = {
    "name": "churn-model",
    "data": "data/churn.csv",
    "target": SCHEMA["target"]["column"],
    "positive": str(SCHEMA["target"]["positive"]),
    "id": SCHEMA["id"],
    "repository": "OWNER/REPO",
}
OTHER_ANSWERS = {
    "name": "credit-risk",
    "data": "credit.csv",
    "target": "Status",
    "positive": "bad",
    "id": "",
    "repository": "acme/credit-risk",
}


def render(dest: Path, answers: dict[str, Any]) -> Path:
    """``copier copy`` of this repository (its working tree) into ``dest``, without the tasks."""
    from copier import run_copy
    from copier.errors import DirtyLocalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        run_copy(
            str(ROOT),
            dest,
            data=answers,
            vcs_ref="HEAD",
            defaults=True,
            skip_tasks=True,
            quiet=True,
        )
    return dest


def files(root: Path) -> set[str]:
    """Every file under ``root``, relative, outside .git and Python's bytecode caches."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not {".git", "__pycache__"} & set(p.relative_to(root).parts)
    }


def example_words() -> re.Pattern[str]:
    """The example's own words: its subject, its column names and its category values.

    Three column names that are plain English words are left out (code may well say "contract"
    of the schema); every other column name, the multi-word category values and the subject
    would betray a leftover of the example.
    """
    words = {"churn", "telco", "customer"}
    columns = SCHEMA["features"] | SCHEMA.get("audit", {})
    words |= set(columns) - {"contract", "partner", "female"}
    for feature in columns.values():
        words |= {c for c in feature.get("categories", []) if " " in c or "-" in c}
    return re.compile("|".join(re.escape(w) for w in sorted(words)), re.IGNORECASE)
