"""No import cycle among the project's modules (rift_losses/, integrations/, the start-up hook).

Every module is parsed with ``ast`` (nothing is imported, so no host framework is needed) and
every import statement counts, at module level or inside a function: ``import a.b``,
``from a import b``, ``from . import b``, ``from ..x import y``. An import names the module it
loads: ``from pkg import sub`` is an edge to ``pkg.sub`` when ``sub`` is a module of the
project, else to ``pkg`` itself. The implicit import of a module's parent packages is not an
edge (a package's ``__init__`` importing its own submodules is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Source folder -> the package it is installed as (pyproject.toml's package-dir).
SOURCES = {"rift_losses": "rift_losses", "integrations": "rift_losses.integrations"}
TOP_LEVEL_MODULES = ("_rift_losses_hook.py",)
#: The source-tree stand-in for integrations/ (rift_losses/integrations/__init__.py): not a module
#: of its own, it runs integrations/__init__.py.
STAND_INS = (ROOT / "rift_losses" / "integrations",)

#: Cycles known today, each as the set of modules it goes through (none: issue 10 item 3 removed the
#: LLaMA-Factory adapter's {_args, _data, _trainer} one). A new cycle fails the test.
KNOWN_CYCLES: set[frozenset[str]] = set()


def project_modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every module of the project."""
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if any(path.is_relative_to(stand_in) for stand_in in STAND_INS):
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join([package, *parts])] = (path, is_package)
    for name in TOP_LEVEL_MODULES:
        modules[name.removesuffix(".py")] = (ROOT / name, False)
    return modules


def _within(name: str, modules) -> str | None:
    """``name`` if it is a project module, else its longest prefix that is one, else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, path: Path, is_package: bool, modules) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its body."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in (_within(target, modules) for target in targets) if t is not None)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components that hold a cycle (two modules or more, or a module
    that imports itself)."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {name: reachable(name) for name in graph}
    found = set()
    for name in graph:
        component = frozenset({name} | {other for other in reach[name] if name in reach[other]})
        if len(component) > 1 or name in graph[name]:
            found.add(component)
    return found


def test_the_graph_sees_every_kind_of_import():
    """The parser finds imports of each form (so an empty graph cannot pass the cycle test)."""
    graph = import_graph()
    # absolute, `from . import x` (a submodule), `from ._layout import name`, and in a function
    assert "rift_losses.logprobs" in graph["rift_losses"]
    assert {"rift_losses._checks", "rift_losses._torch_logprobs", "rift_losses._layout"} <= graph[
        "rift_losses.logprobs"
    ]
    assert "rift_losses._triton_logprobs" in graph["rift_losses.logprobs"]  # imported inside a function
    assert graph["rift_losses._triton_logprobs"] == {"rift_losses._layout"}
    assert "rift_losses.integrations._common" in graph["rift_losses.integrations.swift._datasets"]  # from .. import


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == {frozenset("abc"), frozenset("d")}


def test_backends_import_the_layout_module_not_each_other():
    graph = import_graph()
    assert graph["rift_losses._layout"] == set()  # a leaf
    for backend in ("rift_losses._torch_logprobs", "rift_losses._triton_logprobs"):
        assert "rift_losses.logprobs" not in graph[backend]
    assert "rift_losses._triton_logprobs" not in graph["rift_losses._torch_logprobs"]


def test_no_import_cycle_other_than_the_known_one():
    found = cycles(import_graph())
    new = found - KNOWN_CYCLES
    gone = KNOWN_CYCLES - found
    assert not new, f"new import cycles: {[sorted(c) for c in new]}"
    assert not gone, f"a known cycle is gone, delete it from KNOWN_CYCLES: {[sorted(c) for c in gone]}"
