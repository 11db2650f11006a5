"""The layout's rules (README "Layout"), checked on the source: no module over 400 lines, no
function body over 60, Faust imported by the engine's host alone (and the benchmark's naive-Faust
contender)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "streams"
MODULES = sorted(SOURCE.rglob("*.py"))


def test_the_source_is_there() -> None:
    assert len(MODULES) > 50 and (SOURCE / "host.py") in MODULES


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_module_over_400_lines(module: Path) -> None:
    assert len(module.read_text().splitlines()) <= 400


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end (the signature and the
    docstring do not count: a CLI command's options are its signature)."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (node.end_lineno or node.lineno) - body[0].lineno + 1


def test_body_lines_skip_the_signature_and_the_docstring() -> None:
    tree = ast.parse('def f(\n    a: int,\n) -> int:\n    """Doc."""\n    b = a\n    return b\n')
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef) and body_lines(function) == 2


def test_no_function_body_over_60_lines() -> None:
    long = []
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > 60:
                long.append(f"{module.relative_to(SOURCE)}:{node.lineno} {node.name} ({body_lines(node)})")
    assert long == []


def imports_faust(module: Path) -> bool:
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "faust" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "faust":
            return True
    return False


def test_faust_is_imported_by_the_host_alone() -> None:
    importers = {str(m.relative_to(SOURCE)) for m in MODULES if imports_faust(m)}
    assert importers == {"host.py", "bench/jobs/naive_faust.py"}
