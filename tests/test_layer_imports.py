"""The layers' import rules, read from the source (module-level and deferred imports alike): no import cycle
inside workbench/engine, and neither the UI nor the engine imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import workbench

PACKAGE = Path(workbench.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every workbench module `path` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("workbench")}


def module_name(path: Path) -> str:
    return ".".join(("workbench", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def import_graph(layer: str) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (PACKAGE / layer).rglob("*.py")}
    return {name: imported_modules(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((cycle for node in sorted(graph) if (cycle := visit(node, []))), None)


def test_the_walk_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph("engine")
    assert "workbench.engine.session" in graph["workbench.engine.trainer"]  # the walk sees deferred imports


def test_no_import_cycle_inside_the_engine():
    assert find_cycle(import_graph("engine")) is None


def test_ui_and_engine_never_import_the_cli():
    for layer in ("ui", "engine", "core"):
        for path in (PACKAGE / layer).rglob("*.py"):
            cli = {name for name in imported_modules(path) if name.startswith("workbench.cli")}
            assert not cli, f"{path.relative_to(PACKAGE)} imports {sorted(cli)}"
