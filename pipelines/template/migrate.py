"""A template migration: add a key that a new template version needs to a model-owned YAML file.

Model-owned files (params.yaml above all) are never merged on ``make update-template``; a
template version that needs a new key there declares it in copier.yml's ``_migrations``, gated by
that version, as a call of this module. The key is added only where the file lacks it, with the
template's default value, keeping the file's comments and layout; a value the model set stays.

A key that moved (``--from OLD.KEY``) takes the old key's value when the file has it, and the
old key goes: a section that no longer knows it would refuse it.

Usage: ``python -m pipelines.template.migrate FILE DOTTED.KEY VALUE [--from OLD.KEY]`` (VALUE is
YAML: ``100``, ``info``, ``[a, b]``)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.io import PipelineError, run_stage


def _round_trip(path: Path) -> tuple[Any, Any]:
    """A ruamel.yaml round-tripper that keeps quotes and comments, and the file's document."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 100
    return rt, rt.load(path.read_text())


def add_key(path: Path, dotted: str, value: object) -> bool:
    """Add ``dotted`` (``section.key``) with ``value`` to the YAML file unless it is there.

    Returns:
        Whether the key was added.

    Raises:
        PipelineError: A parent of the key exists and is not a mapping.
    """
    rt, document = _round_trip(path)
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


_ABSENT = object()


def remove_key(path: Path, dotted: str) -> object:
    """Remove ``dotted`` from the YAML file, keeping the rest as it is.

    Returns:
        Its value, or ``_ABSENT`` when the file has no such key.
    """
    rt, document = _round_trip(path)
    *parents, leaf = dotted.split(".")
    node = document
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        return _ABSENT
    value = node.pop(leaf)
    with path.open("w") as out:
        rt.dump(document, out)
    return value


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
    parser.add_argument("--from", dest="old", help="the dotted key it moved from, if it moved")
    args = parser.parse_args(argv)
    value = yaml.safe_load(args.value)
    moved = _ABSENT if args.old is None else remove_key(args.file, args.old)
    added = add_key(args.file, args.key, value if moved is _ABSENT else moved)
    said = "added" if added else "already set, kept"
    if moved is not _ABSENT:
        said = f"moved from {args.old}" if added else f"already set; {args.old} removed"
    print(f"migration: {args.file} {args.key} {said}")
    return 0


if __name__ == "__main__":
    run_stage(main)
