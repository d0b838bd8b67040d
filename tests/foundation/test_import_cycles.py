"""
No import cycles in the package, function-local imports included.

A cycle hidden in a function-local import still couples the two modules both ways: the
one cannot be read, tested or replaced without the other. The graph is built from the
source (AST), so an import that only runs on some path counts as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "closefunnel"


def _module_name(path: Path, root: Path) -> str:
    """*path*'s dotted name, *root* being the directory that holds the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The package modules (of *modules*) that *path* imports anywhere in its source."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports pkg and, when it is a module, pkg.mod.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in modules)
    found.discard(name)
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    root = package.parent
    paths = sorted(package.rglob("*.py"))
    modules = {_module_name(path, root) for path in paths}
    return {_module_name(path, root): _imports(path, root, modules) for path in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_package_has_no_import_cycles() -> None:
    graph = _graph()
    assert "closefunnel._client" in graph
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_function_local_import(tmp_path: Path) -> None:
    """The check itself: a cycle through a function-local import is found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert _cycles(_graph(package)) == [["pkg.a", "pkg.b"]]


def test_the_converter_knows_no_model() -> None:
    """The models' codecs use the generic converter; the converter imports no model back."""
    graph = _graph()
    assert "closefunnel._convert" in graph["closefunnel._models"]
    assert "closefunnel._models" not in graph["closefunnel._convert"]
