"""Fixtures of the console tests: one gateway with its console (and a real sshd upstream),
one headless Chromium, and an admin and an observer logged in once each, for the whole
package. Each test using ``admin``/``observer`` is checked afterwards: nothing loaded
from outside the console, no CSP violation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.conftest import pg_server, pg_url, store, store_url  # noqa: F401 (both stores)
from tests.gateway.gwharness import Sshd
from tests.web.webharness import ConsoleWorld, Watched, chromium


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


def _logged_in(browser: Any, cw: ConsoleWorld, who: str) -> Iterator[Watched]:
    w = Watched(browser, cw.base)
    w.login(cw.admin if who == "admin" else cw.observer)
    assert w.page.url == cw.base + "/", w.page.content()[-800:]
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="package")
def admin_ctx(browser: Any, console_world: ConsoleWorld) -> Iterator[Watched]:
    yield from _logged_in(browser, console_world, "admin")


@pytest.fixture(scope="package")
def observer_ctx(browser: Any, console_world: ConsoleWorld) -> Iterator[Watched]:
    yield from _logged_in(browser, console_world, "observer")


def _checked(w: Watched) -> Iterator[Watched]:
    w.requests.clear()
    w.csp_messages.clear()
    yield w
    assert w.foreign_requests() == [], "a page loaded something from outside the console"
    assert w.violations() == [], "the Content-Security-Policy blocked something"


@pytest.fixture
def admin(admin_ctx: Watched) -> Iterator[Watched]:
    yield from _checked(admin_ctx)


@pytest.fixture
def observer(observer_ctx: Watched) -> Iterator[Watched]:
    yield from _checked(observer_ctx)
