"""The shape of the code: an import graph without circles (every import counted, the lazy ones in
functions and the type-only ones too), so that each module depends on the ones below it."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top, prefix in (("elrbench", "elrbench"), ("cli", "elrbench.cli"), ("workloads", "elrbench.workloads")):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT / top).with_suffix("").parts
            name = ".".join((prefix, *rel)).removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("elrbench"):
                    deps.add(node.module)
                elif isinstance(node, ast.ImportFrom) and node.level == 1:  # cli's `from .common import ...`
                    deps.add(f"{name.rsplit('.', 1)[0]}.{node.module}")
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("elrbench")}
            graph[name] = deps
    return graph


def test_the_import_graph_has_no_circle():
    graph = _graph()
    assert {"elrbench.spec", "elrbench.executors", "elrbench.executors.ray", "elrbench.cli.submit"} <= set(graph)
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u] & set(graph)):
            if state.get(v) == 1:
                circles.append([*path[path.index(v):], v])
            elif v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
