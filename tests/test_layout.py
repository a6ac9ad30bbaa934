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


def _full_imports(path: Path) -> set[str]:
    """Dotted names of every module `path` imports (absolute imports, lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_module_is_longer_than_one_sitting() -> None:
    """Modules small enough to read in one sitting: 600 lines, tests and benchmarks too."""
    root = PACKAGE.parent
    sources = [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py")]
    sources += [*(root / "benchmarks").rglob("*.py")]
    long = {
        str(p.relative_to(root)): n for p in sources if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}, f"modules over 600 lines: {long}"


def test_no_function_is_longer_than_eighty_lines() -> None:
    """A function reads in one screen: 80 lines from its `def` to its end, decorators aside."""
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = lines
    assert long == {}, f"functions over 80 lines: {long}"


def test_serving_rooms_never_import_torch_or_training() -> None:
    """runtime/, search/, service/, stores/, evaluation/ and ingest/ run without torch."""
    rooms = ("runtime", "search", "service", "stores", "evaluation", "ingest", "pretrained")
    offenders = {}
    for room in rooms:
        for path in sorted((PACKAGE / room).rglob("*.py")):
            heavy = {
                name
                for name in _full_imports(path)
                if name.split(".")[0] in ("torch", "transformers")
                or name.startswith("twinbert_search.training")
            }
            if path == PACKAGE / "runtime" / "models.py":  # the default model, built on request
                heavy.discard("twinbert_search.training.default_model")
            if heavy:
                offenders[str(path.relative_to(PACKAGE))] = sorted(heavy)
    assert offenders == {}, f"the serving path imports training: {offenders}"


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level names of the modules a module imports when it is imported: its body, class
    bodies and blocks (`if`, `try`) included, function bodies (lazy imports) not."""
    names: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return names


def test_faiss_is_imported_at_module_level_only_in_the_embedded_room() -> None:
    """faiss loads with `stores/embedded/` only: the cluster backends and the service on a
    cluster never pay for it. Elsewhere it may be imported inside a function."""
    embedded = PACKAGE / "stores" / "embedded"
    assert "faiss" in _module_level_imports(ast.parse((embedded / "ann.py").read_text()))
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if embedded not in path.parents
        and "faiss" in _module_level_imports(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert offenders == [], f"faiss imported at module level outside stores/embedded/: {offenders}"


def test_the_module_level_import_scan_skips_function_bodies() -> None:
    tree = ast.parse(
        "import a\nif x:\n    from b import c\nclass K:\n    import d\ndef f():\n    import faiss\n"
    )
    assert _module_level_imports(tree) == {"a", "b", "d"}
