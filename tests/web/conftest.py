"""Fixtures of the console tests: one gateway with its console (and a real sshd upstream)
and one headless Chromium for the whole package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.gwharness import Sshd
from tests.web.webharness import ConsoleWorld, chromium


@pytest.fixture(scope="package")
def console_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    sshd = Sshd.start(tmp_path_factory.mktemp("web-upstream"))
    try:
        cw = ConsoleWorld.start(tmp_path_factory.mktemp("web-world"), sshd)
        try:
            yield cw
        finally:
            cw.stop()
    finally:
        sshd.stop()


@pytest.fixture(scope="package")
def browser(console_world: ConsoleWorld) -> Iterator[Any]:
    with chromium(console_world.cert_pem) as b:
        yield b
