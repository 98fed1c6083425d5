"""The builder's layers import one way only: overlay <- plan <- rules <- planner <- the
pipeline and the CLI (also inside functions: a late import is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BUILDER = Path(__file__).resolve().parent.parent / "builder"
# each layer may import only the layers before it
LAYERS = ("builder.overlay", "builder.plan", "builder.rules", "builder.planner")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(BUILDER.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


@pytest.mark.parametrize("path", sorted(BUILDER.rglob("*.py")), ids=lambda p: module_name(p))
def test_imports_go_one_way(path: Path) -> None:
    own = layer_of(module_name(path))
    if own is None:
        return
    upward = sorted(m for m in imports(path) if (layer_of(m) or -1) > own)
    assert not upward, f"{module_name(path)} imports a higher layer: {upward}"


def test_the_detector_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "plan.py"
    bad.write_text("def f():\n    from builder import rules\n    from builder.planner import x\n")
    assert {m for m in imports(bad) if (layer_of(m) or -1) > 1} == {"builder.planner",
                                                                    "builder.planner.x",
                                                                    "builder.rules"}
