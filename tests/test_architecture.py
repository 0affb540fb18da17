"""The folder tree is the architecture: layers import downwards only, no import circles.

Every `import` and `from ... import` in mmad/ counts, at module level or inside a function
(a lazy import is still a dependency) and under TYPE_CHECKING too. The layers, lowest first:
a module may import its own package and any package of a lower layer, nothing above.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmad"

# Lowest first. Packages in one layer must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("mmad.version", "mmad.errors", "mmad.redaction", "mmad.metrics"),
    ("mmad.paths",),  # what a path is, in words (imports mmad.errors)
    ("mmad.reading",),  # opening user files without blocking on a FIFO
    ("mmad.atomic",),
    ("mmad.config",),
    ("mmad.data",),
    ("mmad.prompts", "mmad.providers"),
    ("mmad.cache", "mmad.cost"),
    ("mmad.results",),
    ("mmad.engine",),
    ("mmad.hybrid",),
    ("mmad.scoring", "mmad.analysis"),
    ("mmad.comparison", "mmad.qa", "mmad.classify"),
    ("mmad.report", "mmad.view"),
    ("mmad.api",),
    ("mmad",),  # the package's facade: mmad.evaluate etc., loaded from mmad.api on first use
    ("mmad.cli",),
    ("mmad.__main__",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The mmad modules this file imports (a `from pkg import mod` counts as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, name, set(found)) for name, path in found.items()}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, owning package) of a module: the longest listed prefix wins."""
    best = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best[1])):
                best = (index, package)
    assert best is not None, f"{module} belongs to no layer: add its package to LAYERS"
    return best


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_package_circles():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph().items():
        for target in targets:
            a, b = layer_of(module)[1], layer_of(target)[1]
            if a != b:
                packages[a].add(b)
    assert cycles(packages) == []


def test_imports_run_downwards_only():
    upward = []
    for module, targets in sorted(graph().items()):
        here, own = layer_of(module)
        for target in sorted(targets):
            there, other = layer_of(target)
            if other != own and there >= here:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_metrics_imports_nothing_of_ours():
    edges = graph()
    outside = sorted(f"{m} -> {t}" for m, ts in edges.items() if m.startswith("mmad.metrics")
                     for t in ts if not t.startswith("mmad.metrics"))
    assert outside == []


def test_nothing_outside_the_cli_imports_it():
    edges = graph()
    assert sorted(f"{m} -> {t}" for m, ts in edges.items() if not m.startswith(("mmad.cli", "mmad.__main__"))
                  for t in ts if t.startswith("mmad.cli")) == []


@pytest.mark.parametrize("heavy", ["torch", "mmad_conventional"])
def test_mmad_never_imports_torch(heavy):
    users = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == heavy or n.startswith(heavy + ".") for n in names):
                users.append(name)
    allowed = {"mmad.cli.detect"} if heavy == "mmad_conventional" else set()
    assert set(users) <= allowed, f"{sorted(set(users) - allowed)} import {heavy}"


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The rules can fail: a made-up circle and a made-up upward import are caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("mmad.cli.score")[0] > layer_of("mmad.engine.runner")[0]
    assert layer_of("mmad.metrics.core") == (0, "mmad.metrics")
