"""The terminal's code (kiosk/, attestation/) and the builder never import the gateway;
the main CLI reaches it only through its lazy command table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("kiosk", "attestation", "builder") for p in (REPO / d).rglob("*.py"))


def gateway_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [n for n in names if n == "gateway" or n.startswith("gateway.")]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_gateway_import(path: Path) -> None:
    assert gateway_imports(path) == []


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    import gateway.store\n    from gateway.cli import x\n")
    assert gateway_imports(bad) == ["gateway.store", "gateway.cli"]


def test_main_cli_names_the_gateway_lazily() -> None:
    text = (REPO / "builder/cli.py").read_text()
    assert '"gateway": ("gateway.cli", "gateway_group"' in text
