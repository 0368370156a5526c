"""The package's floors, guarded: every import (inside functions too, as Python runs them) goes down or
sideways, never up, and there is no import circle. The order, low to high:

    core < livelink (format) / export / data < models < pipelines < evaluation / training / convert < apps
    < commands / cli

Old module paths kept for one release (the deprecation shims) may be imported by users, never by the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "express4d_hf"
FLOORS = {
    "core": 0,
    "livelink": 1, "export": 1, "data": 1,
    "models": 2,
    "pipelines": 3,
    "evaluation": 4, "training": 4, "convert": 4,
    "apps": 5,
    "commands": 6, "cli": 6,
}  # fmt: skip
SHIMS = {
    "express4d_hf.arkit", "express4d_hf.constants", "express4d_hf.data.stats", "express4d_hf.text",
    "express4d_hf.plotting", "express4d_hf.benchmark", "express4d_hf.space", "express4d_hf.contribute",
}  # fmt: skip
ROOT_FLOOR = 1  # the package root re-exports FaceMotion and the Live Link reader


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    parts = module.split(".")
    return ROOT_FLOOR if len(parts) == 1 else FLOORS[parts[1]]


def package_imports(path: Path) -> set[str]:
    """Package modules that ``path`` imports, resolved to module names (``from x import name`` counts as x.name
    when that is a module)."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "express4d_hf")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "express4d_hf":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in ALL_MODULES else target)
    found.discard(module)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))
ALL_MODULES = {module_name(p) for p in SOURCES}
GRAPH = {module_name(p): package_imports(p) for p in SOURCES}


def test_every_top_level_entry_has_a_floor():
    entries = {m.split(".")[1] for m in ALL_MODULES if "." in m and m not in SHIMS}
    assert entries <= set(FLOORS), f"give these a floor in tests/test_layers.py: {sorted(entries - set(FLOORS))}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m not in SHIMS))
def test_imports_go_down_or_sideways(module):
    here = floor_of(module)
    upward = sorted(t for t in GRAPH[module] if t not in SHIMS and floor_of(t) > here)
    assert not upward, f"{module} (floor {here}) imports higher floors: {upward}"
    shims = sorted(GRAPH[module] & SHIMS)
    assert not shims, f"{module} imports deprecated aliases {shims}; import their new homes"


def test_core_imports_nothing_else_of_the_package():
    for module, targets in GRAPH.items():
        if module.startswith("express4d_hf.core"):
            outside = sorted(t for t in targets if not t.startswith("express4d_hf.core"))
            assert not outside, f"{module} is core and imports {outside}"


def test_no_import_circle():
    """Depth-first search over module imports (a package's __init__ counts as the package)."""
    graph = {m: {t for t in ts if t in GRAPH and t not in SHIMS} for m, ts in GRAPH.items() if m not in SHIMS}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_guard_sees_upward_imports(tmp_path):
    """The walker itself: a function-level relative import of a higher floor is found."""
    fake = PACKAGE / "models" / "mdm.py"
    targets = package_imports(fake)
    assert any(t.startswith("express4d_hf.core") for t in targets)
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..apps import benchmark\n")
    tree = ast.parse(source.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert node.level == 2 and node.module == "apps"
