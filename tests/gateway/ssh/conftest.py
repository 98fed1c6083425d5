"""pytest fixtures over tests/gateway/gwharness.py (import them into a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.gwharness import Sshd, World


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    s = Sshd.start(tmp_path_factory.mktemp("upstream"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One running gateway (SQLite store, soft terminals allowed) for a test module."""
    w = World.create(tmp_path_factory.mktemp("world"), sshd,
                     extra="attestation:\n  allow_soft: true\n")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def fresh_world(base: Path, sshd: Sshd, extra: str = "", database: str | None = None,
                command: list[str] | None = None) -> World:
    w = World.create(base, sshd, database=database, command=command,
                     extra="attestation:\n  allow_soft: true\n" + extra)
    w.start()
    return w
