"""The http package has no import cycle, not even through imports deferred into functions (the
route table's module imports the others; they never import it back)."""

from __future__ import annotations

import ast
from pathlib import Path

HTTP = Path(__file__).resolve().parents[2] / "src" / "customs_gateway" / "http"


def _imports(path: Path) -> set[str]:
    """The http modules `path` imports, anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_the_http_package_has_no_import_cycle() -> None:
    modules = {p.stem: p for p in HTTP.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & set(modules) for name, path in modules.items()}
    assert graph["local"] >= {"appkeys", "metrics", "openapi", "problems"}  # the test sees imports

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, cycles


def test_the_console_never_imports_the_route_tables_module() -> None:
    """local.py mounts the console (and hands it what it shares), so the console must not import it."""
    for path in (HTTP / "console").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert (node.module or "").split(".")[0] != "local", f"{path.name} imports http.local"
