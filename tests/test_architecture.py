"""The package stands as its docstring says: layers, no circles, closed lists of code.

Read from the source with ``ast`` (:mod:`tests.support.imports`), function-level imports included.
And the tests stand on one axis: their folders mirror the code's, each file's name is its own.
"""

from __future__ import annotations

import ast
import re
from collections import Counter

import pytest
import yaml

import pipelines
from tests.support.imports import (
    ROOT,
    Import,
    closure,
    cycles,
    files,
    import_graph,
    imports_of,
    modules,
)

# Lowest first; parts in one layer may not import each other.
LAYERS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"core": ("pipelines", "pipelines.core", "pipelines.params", "pipelines.schema")},
    {"stages": ("pipelines.stages",)},
    {"serving": ("pipelines.serving",)},
    {
        "review": ("pipelines.review",),
        "monitoring": ("pipelines.monitoring",),
        "tuning": ("pipelines.tuning",),
    },
    {"release": ("pipelines.release",)},
    {"template": ("pipelines.template",)},
    {"tools": ("tools",)},
)
# Imports of the project's own modules inside a function, each with the reason it is there.
LAZY = {
    ("pipelines.serving.mlflow_model", "pipelines.core.model"): "MLflow loads this file by path, "
    "before the logged code is on sys.path",
    ("pipelines.serving.mlflow_model", "pipelines.schema"): "as above",
    ("pipelines.serving.mlflow_model", "pipelines.serving.batch"): "as above",
}
BENTO_SERVICE = "pipelines.serving.service"
# The file MLflow logs as the registered model's code (pipelines.stages.register's PYFUNC)
EXTRA_ROOTS = {"register": ["pipelines.serving.mlflow_model"]}


def part_of(module: str) -> tuple[int, str]:
    """The layer (its index) and the part a module belongs to."""
    best: tuple[int, str, str] | None = None
    for level, parts in enumerate(LAYERS):
        for part, prefixes in parts.items():
            for prefix in prefixes:
                if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > len(best[2])
                ):
                    best = (level, part, prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0], best[1]


def upward(found: Import) -> bool:
    """Whether an import runs to a higher layer, or sideways to another part of its layer."""
    (source_level, source_part), (target_level, target_part) = (
        part_of(found.source),
        part_of(found.target),
    )
    return target_level > source_level or (
        target_level == source_level and target_part != source_part
    )


def every_import() -> list[Import]:
    return [found for module in modules() for found in imports_of(module)]


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules():
        part_of(module)


def test_no_import_runs_upward() -> None:
    wrong = [
        f"{i.source}:{i.line} imports {i.target} ({part_of(i.source)[1]} -> {part_of(i.target)[1]})"
        for i in every_import()
        if upward(i)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_imports_close_a_circle() -> None:
    assert not cycles(import_graph())


def test_function_level_imports_of_our_own_modules_are_the_listed_ones() -> None:
    lazy = {(i.source, i.target) for i in every_import() if i.in_function}
    assert lazy - set(LAZY) == set(), "move it to the top, or list it in LAZY with its reason"
    assert set(LAZY) - lazy == set(), "no longer lazy: take it off LAZY"


def test_the_rule_catches_an_upward_import_and_a_circle() -> None:
    """The checks themselves bite: a stage importing the review, and two modules in a circle."""
    assert upward(Import("pipelines.stages.card", "pipelines.review.gate", 1, False, False))
    assert upward(Import("pipelines.review.report", "pipelines.monitoring.monitor", 1, True, False))
    assert not upward(Import("pipelines.review.report", "pipelines.core.metrics", 1, True, False))
    graph = import_graph()
    assert "pipelines.core.io" in graph["pipelines.params"]
    closed = graph | {"pipelines.core.io": [*graph["pipelines.core.io"], "pipelines.params"]}
    assert ["pipelines.core.io", "pipelines.params"] in cycles(closed)


def test_the_package_docstring_names_the_layers_in_order() -> None:
    doc = pipelines.__doc__ or ""
    named = [re.escape(f"``{part}``") for parts in LAYERS[:-1] for part in parts]
    assert re.search(".*".join(named), doc, re.DOTALL), "pipelines/__init__.py names the layers"


def stage_modules() -> dict[str, str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        command = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
        match = re.search(r"python -m ([\w.]+)", command)
        assert match, f"stage {name}: `python -m <module>` expected in its cmd"
        found[name] = match.group(1)
    return found


@pytest.mark.parametrize("stage", list(stage_modules()))
def test_each_stage_depends_on_the_code_it_runs(stage: str) -> None:
    """A code change reruns exactly the stages whose command can run it."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    code = {d for d in deps if d.endswith(".py")}
    runs = closure([stage_modules()[stage], *EXTRA_ROOTS.get(stage, [])])
    needed = {f for f in files(runs) if not f.endswith("__init__.py")}
    assert needed - code == set(), f"dvc.yaml's {stage} stage misses code deps"
    assert code - needed == set(), f"dvc.yaml's {stage} stage depends on code it does not run"


def test_the_bento_holds_exactly_the_code_the_service_imports() -> None:
    include = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    code = {item for item in include if item.endswith(".py")}
    needed = files(closure([BENTO_SERVICE]))
    assert needed - code == set(), "bentofile.yaml's include misses modules the service imports"
    assert code - needed == set(), "bentofile.yaml's include holds code the service never runs"
    assert not any(f.startswith(("pipelines/stages/", "tools/")) for f in code)


def test_the_stand_ins_match_image_digests_as_the_release_does() -> None:
    """The act stand-ins run with the standard library only, so they write the pattern out."""
    from pipelines.release import reference
    from tools.act import standins

    assert standins.DIGEST.pattern == reference.DIGEST.pattern


TESTS = ROOT / "tests"
# The folders of tests/ that mirror no folder of the code, and what each holds
OTHER_TEST_FOLDERS = {
    "data": "the data validation, on the real table",
    "model": "the model's behaviour (the model's own tests)",
    "docs": "docs/: its commands run, the site builds",
    "deploy": "deploy/'s manifests, rendered and linted",
    "workflows": ".github/workflows, read statically",
    "e2e": "the slow end-to-end tests, every one marked slow",
    "support": "helpers the tests share",
}


def test_the_test_folders_mirror_the_code_or_a_folder_of_the_repository() -> None:
    code = {p.name for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").is_file()}
    code |= {"tools", "benchmarks"}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders - code - set(OTHER_TEST_FOLDERS) == set()


def test_no_two_test_files_share_a_name() -> None:
    """A file's name says what it tests, once: no unit/test_x.py beside serving/test_x.py."""
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert sorted(name for name, count in names.items() if count > 1) == []


def test_every_end_to_end_module_is_marked_slow() -> None:
    """``-m "not slow"`` leaves out all of tests/e2e: each module says so at its top."""
    unmarked = []
    for path in sorted((TESTS / "e2e").glob("test_*.py")):
        marks = [
            ast.unparse(node.value)
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        ]
        if not any("pytest.mark.slow" in mark for mark in marks):
            unmarked.append(path.name)
    assert unmarked == [], "give each a module-level `pytestmark = pytest.mark.slow`"


def test_nothing_outside_the_tests_imports_them() -> None:
    """The package, the tools and the benchmarks run without tests/ (a model's image has none)."""
    found = []
    for folder in ("pipelines", "tools", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                found += [
                    f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"
                ]
    assert found == []
