"""The data sets are a layer below the command line: no module of ``datasets/`` imports
``detsearch.cli`` (the dependency points from the CLI to the data sets, never back), at module
level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
FORBIDDEN = "detsearch.cli"


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_the_check_sees_every_spelling():
    source = ("import detsearch.cli\nfrom detsearch.cli.args import dashed\nfrom detsearch import cli\n"
              "def f():\n    import detsearch.cli.prepare as p\nfrom ..cli import args\n")
    lines = {line for line, name in imported_modules(ast.parse(source), "detsearch.datasets")
             if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")}
    assert lines == {1, 2, 3, 5, 6}


@pytest.mark.parametrize("path", sorted(DATASETS.glob("*.py")), ids=lambda path: path.name)
def test_no_dataset_module_imports_the_cli(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.name}:{line}: {name}" for line, name in imported_modules(tree, "detsearch.datasets")
           if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")]
    assert not bad, bad
