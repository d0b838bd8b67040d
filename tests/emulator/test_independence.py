"""The emulator is a second implementation: it imports nothing of the client it checks."""

from __future__ import annotations

import ast
from pathlib import Path

import closefunnel.emulator

PACKAGE = Path(closefunnel.emulator.__file__).parent


def _imported_modules(tree: ast.AST, *, package: str) -> list[tuple[int, str]]:
    """Every module *tree* imports, anywhere (function bodies too), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the emulator package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _client_imports(source: str, *, package: str = "closefunnel.emulator") -> list[str]:
    return [
        f"line {line}: {module}"
        for line, module in _imported_modules(ast.parse(source), package=package)
        if (module == "closefunnel" or module.startswith("closefunnel."))
        and not (module == package or module.startswith(f"{package}."))
    ]


def test_the_emulator_imports_nothing_of_the_client() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 10  # the walk really sees the package
    offences = {
        path.name: bad
        for path in files
        if (bad := _client_imports(path.read_text(encoding="utf-8")))
    }
    assert offences == {}


def test_the_check_sees_every_import_form() -> None:
    """Top-level, function-local, relative and plain ``import`` forms are all caught."""
    source = (
        "from closefunnel._convert import encode_totals_csv\n"
        "import closefunnel._sansio\n"
        "import closefunnel\n"
        "def f():\n"
        "    from closefunnel.fastapi import router\n"
        "    from .. import _client\n"
        "    from ..cli import main\n"
        "from closefunnel.emulator._csv import totals_csv\n"
        "from . import _limiter\n"
    )
    assert _client_imports(source) == [
        "line 1: closefunnel._convert",
        "line 2: closefunnel._sansio",
        "line 3: closefunnel",
        "line 5: closefunnel.fastapi",
        "line 6: closefunnel",
        "line 7: closefunnel.cli",
    ]
