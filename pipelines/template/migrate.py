"""A template migration: add a key that a new template version needs to a model-owned YAML file.

Model-owned files (params.yaml above all) are never merged on ``make update-template``; a
template version that needs a new key there declares it in copier.yml's ``_migrations``, gated by
that version, as a call of this module. The key is added only where the file lacks it, with the
template's default value, keeping the file's comments and layout; a value the model set stays.

Usage: ``python -m pipelines.template.migrate FILE DOTTED.KEY VALUE`` (VALUE is YAML: ``100``,
``info``, ``[a, b]``)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError, run_stage


def add_key(path: Path, dotted: str, value: object) -> bool:
    """Add ``dotted`` (``section.key``) with ``value`` to the YAML file unless it is there.

    Returns:
        Whether the key was added.

    Raises:
        PipelineError: A parent of the key exists and is not a mapping.
    """
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 100
    document = rt.load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = document
    for key in parents:
        if key not in node:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise PipelineError(f"{path}: {key!r} in {dotted!r} is not a mapping")
    if leaf in node:
        return False
    last = next(reversed(node), None) if node else None
    node[leaf] = value
    if last is not None:
        keep_comments_below(node, last, leaf)
    with path.open("w") as out:
        rt.dump(document, out)
    return True


def keep_comments_below(node: Any, last: str, added: str) -> None:
    """Keep the comments that follow a mapping after a key appended to it.

    ruamel.yaml hangs everything after a mapping's last value on that value: its own comment,
    then a blank line and the comments that introduce the next section. A key appended to the
    mapping would be written below all of them, under the next section's heading; the part from
    the blank line on moves to the added key instead.
    """
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    tokens = node.ca.items.get(last)
    if not tokens or len(tokens) < 3 or tokens[2] is None or "\n\n" not in tokens[2].value:
        return
    comment = tokens[2]
    cut = comment.value.index("\n\n")
    below = comment.value[cut:]
    comment.value = comment.value[: cut + 1]
    node.ca.items[added] = [None, None, CommentToken(below, CommentMark(0), None), None]


def main(argv: list[str] | None = None) -> int:
    """Add the key if missing and say what was done."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("key", help="dotted key, e.g. monitor.window")
    parser.add_argument("value", help="the template's default, as YAML")
    args = parser.parse_args(argv)
    added = add_key(args.file, args.key, yaml.safe_load(args.value))
    print(f"migration: {args.file} {args.key} " + ("added" if added else "already set, kept"))
    return 0


if __name__ == "__main__":
    run_stage(main)
