"""The shape of the code, kept for every later change (read with ast, nothing imported).

- no module under api/ imports promptrelay.app, not even for typing: routers receive
  the components they use, and app.py imports them (the other way round is a cycle);
- no face (a module under api/) reaches past the pipeline to the upstream client or
  the resilience layer;
- no function over 60 lines and no module over 500 lines in src/.

README length and its docs/ links: tests/test_docs.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "promptrelay"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500
# Modules an api/ module must not import (prefix match on the dotted name).
_FORBIDDEN_IN_API = ("promptrelay.app", "promptrelay.upstream.client", "promptrelay.resilience")


def _modules(root: Path = SRC) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


def imported(tree: ast.AST) -> Iterator[str]:
    """Every module name an import statement names, wherever it stands (inside `if
    TYPE_CHECKING:` or a function too). Relative imports are resolved by the caller."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def long_functions(tree: ast.AST, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = node.end_lineno - start + 1
            if lines > limit:
                found.append((node.name, lines))
    return found


@pytest.mark.parametrize("path", _modules(SRC / "api"), ids=_name)
def test_api_modules_import_neither_the_app_nor_what_lies_below_the_pipeline(
    path: Path,
) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert relative == [], "use absolute imports under api/"
    bad = sorted(
        {
            name
            for name in imported(tree)
            if any(name == f or name.startswith(f + ".") for f in _FORBIDDEN_IN_API)
        }
    )
    assert bad == []


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_functions_and_modules_stay_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES
    assert long_functions(ast.parse(text)) == []


def test_the_checks_see_what_they_look_for() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from promptrelay.app import Runtime\n"
        "import promptrelay.resilience.breaker\n"
        "def f():\n" + "    x = 1\n" * 60 + "@decorated\ndef g():\n    pass\n"
    )
    names = set(imported(tree))
    assert {"promptrelay.app", "promptrelay.app.Runtime"} <= names
    assert "promptrelay.resilience.breaker" in names
    assert long_functions(tree) == [("f", 61)]
