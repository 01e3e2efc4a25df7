"""service/'s import graph against its layers: circles, upward imports, and who imports torch.

    python -m tools.layers            # prints the graph's layers and any violation; exit 1 if any

Folders are the layers, lowest first (a module may import its own layer and those below, never
above):
  0 core        service/core: settings, errors, limits, metrics, logs, tracing, slow, schemas
  1 catalog     service/catalog: registered models, their storage and quotas (torch-free)
  2 engine      service/engine: the device: its values, validation, batcher, worker, modules
  3 sessions    service/sessions: session values, the memory store, the Redis store, the cache
  4 runtime     service/runtime: where the engine runs: this process, or another over a socket
  5 codecs      service/codecs: wire formats and the pipeline's vocabulary
  6 data plane  service/dataplane: the one door, its extensions, the request context
  7 http        service/http: the edge, routes, problems, the HTTP protocol
  8 grpc        service/grpc: Triton's gRPC service, its streams, health and reflection
  9 entry       the app factory, the CLI, the operator commands (service/'s own modules)

The front ends (http, grpc) sit side by side on the data plane: neither imports the other, so
what both need lives below them (a sideways import is an error too).

A module of a folder belongs to that folder's layer; service/'s own modules are named one by one.
A module in no layer (a new folder, or a new module at service/'s root) is an error.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS: list[tuple[str, str]] = [
    ("core", "service.core"),
    ("catalog", "service.catalog"),
    ("engine", "service.engine"),
    ("sessions", "service.sessions"),
    ("runtime", "service.runtime"),
    ("codecs", "service.codecs"),
    ("data plane", "service.dataplane"),
    ("http", "service.http"),
    ("grpc", "service.grpc"),
]
FRONT_ENDS = ("service.http", "service.grpc")
ENTRY = ("service", "service.__main__", "service.app", "service.client", "service.ops",
         "service.openapi_export")  # fmt: skip
LAYERS = [name for name, _ in FOLDERS] + ["entry"]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def layer_of(module: str) -> int:
    """The layer of a module: its folder's, or entry for service/'s own named modules."""
    if module in ENTRY:
        return len(FOLDERS)
    for rank, (_, folder) in enumerate(FOLDERS):
        if module == folder or module.startswith(folder + "."):
            return rank
    raise SystemExit(
        f"tools/layers.py: {module} is in no layer: put it in a layer's folder (or, for an "
        "entry point, name it in ENTRY)"
    )


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


def _front_end(module: str) -> str | None:
    return next((f for f in FRONT_ENDS if module == f or module.startswith(f + ".")), None)


def sideways(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from one front end into another."""
    return sorted(
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if _front_end(m) is not None and _front_end(t) not in (None, _front_end(m))
    )


def main() -> int:
    mods = modules()
    graph = imports(mods)
    for i, name in enumerate(LAYERS):
        members = sorted(m for m in mods if layer_of(m) == i)
        print(f"{i} {name:<11} {len(members):>2} modules: {', '.join(members)}")
    bad_circles, bad_up = circles(graph), upward(graph)
    bad_up += sideways(graph)
    for comp in bad_circles:
        print("circle:", " <-> ".join(comp))
    for m, t in bad_up:
        way = "sideways" if _front_end(m) and _front_end(t) else "upward"
        print(f"{way}: {m} ({LAYERS[layer_of(m)]}) imports {t} ({LAYERS[layer_of(t)]})")
    print(f"{len(bad_circles)} circles, {len(bad_up)} upward or sideways imports")
    return 1 if bad_circles or bad_up else 0


if __name__ == "__main__":
    raise SystemExit(main())
