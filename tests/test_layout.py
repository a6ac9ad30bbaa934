"""The package's layout rules, checked on its source: which rooms may import what."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "twinbert_search"


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth, lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_cli_imports_click() -> None:
    cli = PACKAGE / "cli"
    sources = [p for p in sorted(PACKAGE.rglob("*.py")) if cli not in p.parents]
    assert len(sources) > 20, "the scan found the package's modules"
    offenders = [str(p.relative_to(PACKAGE)) for p in sources if "click" in _imported_modules(p)]
    assert offenders == [], f"click imported outside twinbert_search/cli/: {offenders}"
