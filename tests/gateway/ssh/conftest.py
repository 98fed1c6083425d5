"""Fixtures of the SSH-side gateway tests: a real sshd upstream, a running gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.gwharness import Sshd, World, fresh_world


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
    w = fresh_world(tmp_path_factory.mktemp("world"), sshd)
    try:
        yield w
    finally:
        w.stop()
