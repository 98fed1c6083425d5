"""The console over plain HTTPS (no browser): headers, the body cap, log-in rate limits and
lockouts shared with SSH, the WebSocket's origin check, and the audit chain's state when
the chain is edited behind the gateway's back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import sqlite3
import ssl
import time
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
import websockets

from tests.web.webharness import ConsoleWorld, form_post, open_terminal, session_of

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own (Playwright's sync API keeps a loop running in
    this one when the browser tests ran first)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def login_cookie_and_token(cw: ConsoleWorld) -> tuple[str, str]:
    r = cw.get("/login")
    cookie = r.cookies[0].split(";")[0]
    token = re.search(r'name="token" value="([^"]+)"', r.body)
    assert token is not None
    return cookie, token.group(1)


def web_login(cw: ConsoleWorld, user: str, password: str, code: str) -> tuple[int, str, str]:
    """POST the log-in form; (status, session cookie or "", error text or "")."""
    cookie, token = login_cookie_and_token(cw)
    r = form_post(cw, "/login", {"token": token, "user": user, "password": password,
                                 "code": code}, cookie)
    session = next((c.split(";")[0] for c in r.cookies
                    if c.startswith("__Host-auditbox-session=")), "")
    error = re.search(r'id="login-error">([^<]*)<', r.body)
    return r.status, session, error.group(1) if error else ""


def test_security_headers_on_pages_static_and_errors(console_world: ConsoleWorld) -> None:
    for path in ("/login", "/static/css/console.css", "/static/vendor/xterm/xterm.js",
                 "/no-such-page", "/"):
        r = console_world.get(path)
        h = r.headers
        assert h["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["strict-transport-security"] == "max-age=31536000"
        assert re.fullmatch(r"app;dur=[0-9.]+", h["server-timing"])
        assert "server" not in h
    assert console_world.get("/login").headers["cache-control"] == "no-store"
    assert console_world.get("/no-such-page").status == 404


def test_bodies_over_64_kib_and_non_form_posts_are_refused(console_world: ConsoleWorld) -> None:
    cw = console_world
    cookie, _ = login_cookie_and_token(cw)
    r = cw.request("POST", "/login", "x=" + "a" * 70_000,
                   {"content-type": "application/x-www-form-urlencoded", "cookie": cookie})
    assert r.status == 413
    r = cw.request("POST", "/login", '{"user": "x"}', {"content-type": "application/json",
                                                         "cookie": cookie})
    assert r.status == 415


def test_login_without_its_form_token_or_from_another_origin_is_refused(
        console_world: ConsoleWorld) -> None:
    cw = console_world
    cookie, token = login_cookie_and_token(cw)
    fields = {"user": cw.admin.name, "password": cw.admin.password, "code": "000000"}
    assert form_post(cw, "/login", fields, cookie).status == 403                   # no token
    assert form_post(cw, "/login", {**fields, "token": "0" * 64}, cookie).status == 403
    r = cw.request("POST", "/login", urlencode({**fields, "token": token}), {
        "content-type": "application/x-www-form-urlencoded", "cookie": cookie,
        "origin": "https://evil.example"})
    assert r.status == 403


def test_web_failures_count_toward_the_users_lockout_and_admin_clears_it(
        console_world: ConsoleWorld) -> None:
    cw = console_world
    victim = cw.world.add_user("lockme")
    with cw.store() as s:
        s.update_user("lockme", role="observer")
    for i in range(5):
        status, session, error = web_login(cw, "lockme", f"wrong-password-{i}", "000000")
        assert status == 401 and session == ""
    assert error.startswith("too many failed log-ins; locked out until")
    # the right password is refused now too, here and over SSH (one counter)
    status, _, error = web_login(cw, "lockme", victim.password, victim.code())
    assert status == 401 and "locked out" in error
    # the admin clears the lockout from the Users page
    status, admin_cookie, _ = web_login(cw, cw.admin.name, cw.admin.password, cw.admin.code())
    assert status == 303
    page = cw.get("/users", admin_cookie).body
    assert 'action="/users/lockme/clear-lockout"' in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    r = form_post(cw, "/users/lockme/clear-lockout", {"csrf": csrf.group(1)}, admin_cookie)
    assert (r.status, r.headers["location"]) == (303, "/users")
    status, session, _ = web_login(cw, "lockme", victim.password, victim.code())
    assert status == 303 and session
    entry = cw.world.wait_event("user.unlock", "web:admin1")
    assert entry.data == {"user": "lockme", "was_locked_out": True}


def test_the_live_view_socket_refuses_other_origins_and_strangers(
        console_world: ConsoleWorld) -> None:
    cw = console_world
    term = open_terminal(cw, "web-ws")
    try:
        with cw.store() as s:
            sid = session_of(s, term.user)
        status, cookie, _ = web_login(cw, cw.observer.name, cw.observer.password,
                                      cw.observer.code())
        assert status == 303
        ctx = ssl.create_default_context(cadata=cw.cert_pem.decode())
        url = f"wss://127.0.0.1:{cw.web_port}/sessions/{sid}/live"

        async def attempt(headers: dict[str, str]) -> bytes:
            async with websockets.connect(url, ssl=ctx, additional_headers=headers,
                                          open_timeout=5) as ws:
                first = await asyncio.wait_for(ws.recv(), 5)
                return first if isinstance(first, bytes) else first.encode()

        for headers in ({"cookie": cookie, "origin": "https://evil.example"},
                        {"origin": cw.base}, {"cookie": "__Host-auditbox-session=nope",
                                              "origin": cw.base}):
            with pytest.raises(websockets.InvalidStatus) as info:
                run(attempt(headers))
            assert info.value.response.status_code == 403
        # the observer, same origin: the session's output so far, then live chunks
        term.type("echo socket-$((3*3))\n")
        term.read_until(b"socket-9\r\n")

        async def watch() -> bytes:
            async with websockets.connect(url, ssl=ctx, open_timeout=5, additional_headers={
                    "cookie": cookie, "origin": cw.base}) as ws:
                data = b""
                while b"socket-9" not in data:
                    msg = await asyncio.wait_for(ws.recv(), 5)
                    data += msg if isinstance(msg, bytes) else b""
                await ws.send(b"typed into a read-only view")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                return data

        assert b"socket-9" in run(watch())
        assert cw.world.wait_event("web.watch", "web:observer1").data["session"] == sid
    finally:
        term.close()


def test_an_edited_audit_entry_is_named_on_the_audit_page(console_world: ConsoleWorld) -> None:
    cw = console_world
    status, cookie, _ = web_login(cw, cw.admin.name, cw.admin.password, cw.admin.code())
    assert status == 303
    page = cw.get("/audit", cookie).body
    assert "entries intact" in page and "BROKEN" not in page
    # edit entry 3 behind the gateway's back, then ask for a check
    with sqlite3.connect(cw.world.database) as db:
        (original,) = db.execute("SELECT actor FROM audit WHERE seq = 3").fetchone()
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 3")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    r = form_post(cw, "/audit/verify", {"csrf": csrf.group(1)}, cookie)
    assert r.status == 303
    page = cw.get("/audit", cookie).body
    assert "Audit chain BROKEN" in page
    assert re.search(r"First broken entry: <a href=\"/audit\?before=4\">seq 3</a> \(edited\)",
                     page), page[page.find("chain"):][:600]
    overview = cw.get("/", cookie).body
    assert "Audit chain BROKEN" in overview
    # put it back (the other tests share this gateway): the background check sees it again
    with sqlite3.connect(cw.world.database) as db:
        db.execute("UPDATE audit SET actor = ? WHERE seq = 3", (original,))
    deadline = time.monotonic() + 10
    while "BROKEN" in cw.get("/audit", cookie).body:
        assert time.monotonic() < deadline, "the background check did not see the repair"
        time.sleep(0.5)


def test_admin_actions_take_effect_and_are_audited_with_the_acting_user(
        console_world: ConsoleWorld) -> None:
    from gateway.store.base import Device, Image

    cw = console_world
    now = time.time()
    with cw.store() as s:
        s.add_device(Device("dev-actions", "soft", "img-test", {"status": "active"}, now))
        s.add_image(Image("img-extra", b"{}", b"", now, "test"))
    target = cw.world.add_user("target1")
    status, cookie, _ = web_login(cw, cw.admin.name, cw.admin.password, cw.admin.code())
    assert status == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', cw.get("/", cookie).body)
    assert csrf is not None

    def post(path: str, **fields: str) -> int:
        r = form_post(cw, path, {"csrf": csrf.group(1), **fields}, cookie)
        return r.status

    def active(kind: str, name: str) -> list[int | None]:
        with cw.store() as s:
            return [lk.id for lk in s.active_locks(time.time())
                    if lk.target_kind == kind and lk.target == name]

    assert post("/devices/dev-actions/lock", reason="stolen laptop", ttl="2h") == 303
    (lock_id,) = active("device", "dev-actions")
    with cw.store() as s:
        lock = next(lk for lk in s.list_locks() if lk.id == lock_id)
    assert lock.expires_at is not None and 7190 < lock.expires_at - lock.created_at <= 7200
    assert post("/devices/dev-actions/unlock") == 303 and active("device", "dev-actions") == []
    assert post("/devices/dev-actions/revoke") == 303
    with cw.store() as s:
        d = s.get_device("dev-actions")
        assert d is not None and d.status == "revoked" and d.record["status"] == "revoked"
    assert post("/users/target1/lock", reason="on leave") == 303
    (user_lock,) = active("user", "target1")
    assert post(f"/locks/{user_lock}/remove") == 303 and active("user", "target1") == []
    assert post("/users/target1/lock") == 303 and post("/users/target1/unlock") == 303
    assert active("user", "target1") == []
    with cw.store() as s:
        old_secret = s.get_user("target1").totp_secret      # type: ignore[union-attr]
    assert post("/users/target1/reset-code") == 200
    with cw.store() as s:
        assert s.get_user("target1").totp_secret != old_secret  # type: ignore[union-attr]
    assert target.secret == old_secret
    assert post("/tokens", mode="tpm2", ttl="30m") == 200
    assert post("/images/img-extra/revoke") == 303
    with cw.store() as s:
        assert s.get_image("img-extra").revoked_at is not None   # type: ignore[union-attr]
    # refused input changes nothing
    assert post("/devices/dev-actions/lock", reason="x" * 501) == 400
    assert post("/devices/dev-actions/lock", ttl="forever") == 400
    assert post("/devices/no-such-device/lock") == 404
    assert post("/users", name="Bad Name", password="a-long-enough-password") == 400
    assert post("/users", name="shortpw", password="short") == 400
    assert active("device", "dev-actions") == []
    # every change, with the console user as actor
    by_admin = [(e.event, e.data) for e in cw.world.audit_events() if e.actor == "web:admin1"]
    events = [e for e, _ in by_admin]
    for event in ("lock.add", "lock.remove", "device.revoke", "user.reset-otp", "token.create",
                  "image.revoke"):
        assert event in events, event
    assert ("device.revoke", {"device_id": "dev-actions"}) in by_admin
    assert ("image.revoke", {"image_id": "img-extra"}) in by_admin
