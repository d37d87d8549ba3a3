"""The project's own import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from ... import`` of a project module counts, at the top of a module or
inside a function; those under ``if TYPE_CHECKING:`` are marked, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "tools")


@dataclass(frozen=True)
class Import:
    """One import of a project module by another."""

    source: str
    target: str
    line: int
    in_function: bool
    type_checking: bool


def module_name(path: Path) -> str:
    """``pipelines/core/io.py`` -> ``pipelines.core.io``; an ``__init__`` is its package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the project's packages, by name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(name: str) -> str | None:
    """The project module that ``name`` (a module, or a name inside one) refers to."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


def _walk(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[tuple]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_checking
        nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        guarded = type_checking or (
            isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
        )
        yield from _walk(child, nested, guarded)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """The project modules that ``module`` imports, in source order."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node, in_function, type_checking in _walk(ast.parse(path.read_text()), False, False):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per dot after the first
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base]).strip(".")
            # `from package import module` imports the module; `from module import name` the module
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.append(Import(module, target, node.lineno, in_function, type_checking))
    return tuple(found)


def packages_of(module: str) -> list[str]:
    """The packages Python imports first to reach ``module`` (their ``__init__`` runs)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(roots: Iterable[str]) -> set[str]:
    """Every project module that importing ``roots`` can run, packages included."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += packages_of(module)
        todo += [i.target for i in imports_of(module) if not i.type_checking]
    return seen


def files(names: Iterable[str]) -> set[str]:
    """The files of modules, relative to the repository root."""
    return {modules()[name].relative_to(ROOT).as_posix() for name in names}


def import_graph() -> dict[str, list[str]]:
    """Each project module and the project modules it imports."""
    return {m: sorted({i.target for i in imports_of(m)}) for m in modules()}


def cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found
