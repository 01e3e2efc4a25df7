"""service/'s import graph against its layers: circles, upward imports, and who imports torch.

    python -m tools.layers            # prints the graph's layers and any violation; exit 1 if any

Layers, lowest first (a module may import its own layer and those below, never above):
  0 foundation  settings, errors, metrics, logs, tracing, slow, cpus, gcfreeze, schemas
  1 catalog     registered models, their storage and quotas (torch-free)
  2 engine      the device: batcher, worker, modules, sessions, transport
  3 codecs      wire formats and the pipeline's vocabulary
  4 data plane  the one door: dataplane, its repository and session extensions
  5 api         HTTP: the edge, routes, problems, the HTTP protocol
  6 entry       the app factory, the CLI, the operator commands
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("service", "service.settings", "service.errors", "service.metrics",
                    "service.logs", "service.tracing", "service.slow", "service.cpus",
                    "service.gcfreeze", "service.schemas")),
    ("catalog", ("service.catalog",)),
    ("engine", ("service.engine",)),
    ("codecs", ("service.codecs",)),
    ("data plane", ("service.dataplane", "service.repository_extension",
                    "service.session_extension")),
    ("api", ("service.api", "service.httpproto")),
    ("entry", ("service.app", "service.__main__", "service.ops", "service.client",
               "service.openapi_export")),
]  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank < 0:
        raise SystemExit(f"tools/layers.py: {module} is in no layer; add it to LAYERS")
    return rank


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the service modules it imports (at run time: TYPE_CHECKING blocks excluded)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m and name != "service":
                    graph[m].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (m, t) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)
    )


def main() -> int:
    mods = modules()
    graph = imports(mods)
    for i, (name, _) in enumerate(LAYERS):
        members = sorted(m for m in mods if layer_of(m) == i)
        print(f"{i} {name:<11} {len(members):>2} modules: {', '.join(members)}")
    bad_circles, bad_up = circles(graph), upward(graph)
    for comp in bad_circles:
        print("circle:", " <-> ".join(comp))
    for m, t in bad_up:
        print(f"upward: {m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})")
    print(f"{len(bad_circles)} circles, {len(bad_up)} upward imports")
    return 1 if bad_circles or bad_up else 0


if __name__ == "__main__":
    raise SystemExit(main())
