"""The layout rules of the code base, checked on every run.

Import rules (layers, no cycles) are import-linter contracts in pyproject.toml, run by
scripts/test.sh; this module checks what import-linter cannot see: sizes of modules and functions,
and how much sits at the top of host/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("shared", "host", "device")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_HOST_TOP_LEVEL_MODULES = 6


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules by job (> {MAX_MODULE_LINES} lines): {long}"


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
            # from the def line (decorators excluded) to the last line of the body
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_functions_are_short() -> None:
    long = [f for p in _sources() for f in _long_functions(p)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_host_top_level_is_small() -> None:
    modules = sorted(p.name for p in (REPO / "host").glob("*.py"))
    assert len(modules) <= MAX_HOST_TOP_LEVEL_MODULES, f"host/ has {modules}: move them into its sub-packages"


def test_the_checker_sees_a_long_function(tmp_path: Path) -> None:
    """The length check measures what it says (a 70-line function is caught)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(69))
    src = REPO / "host" / "_probe_long.py"
    try:
        src.write_text(f"def probe() -> None:\n{body}\n")
        assert _long_functions(src) == ["host/_probe_long.py:1 probe (70 lines)"]
    finally:
        src.unlink(missing_ok=True)


@pytest.mark.parametrize("rule", ["PLR0912", "PLR0915", "C901"])
def test_no_project_wide_complexity_ignore(rule: str) -> None:
    from shared.compat import tomllib

    lint = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert rule not in lint.get("ignore", []), f"{rule} is ignored for the whole project"
