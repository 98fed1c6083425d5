"""The console in a real headless Chromium against a gateway the tests start (issue 15's
acceptance): log-in with password + TOTP, a live session on the overview, its live view,
the Lock button, the audit page, recording playback, an observer's limits, CSRF, CSP,
nothing loaded from outside, and a screenshot of every page (build/web-screenshots/)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.web.webharness import PHONE, ConsoleWorld, Watched, open_terminal, session_of


def clean(w: Watched) -> None:
    """Nothing came from outside the console and the CSP blocked nothing."""
    assert w.foreign_requests() == []
    assert w.violations() == []


@pytest.fixture
def admin(browser: Any, console_world: ConsoleWorld) -> Any:
    w = Watched(browser, console_world.base)
    w.login(console_world.admin)
    yield w
    clean(w)
    w.close()


def test_admin_logs_in_with_password_and_code(browser: Any, console_world: ConsoleWorld) -> None:
    w = Watched(browser, console_world.base)
    w.goto("/login")
    w.shot("login")
    w.login(console_world.admin)
    print(w.page.content()[-1500:]); assert w.page.url == console_world.base + "/"
    assert w.page.locator("header .who").inner_text().startswith("admin1")
    entry = console_world.world.wait_event("web.login", "web:admin1")
    assert entry.data["role"] == "admin"
    clean(w)
    w.close()
