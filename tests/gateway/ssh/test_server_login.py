"""Log-in through SSH: password + TOTP, refusals with their codes, the relay, host key."""

from __future__ import annotations

import threading
import time

import paramiko
import pytest

from kiosk.gateway_link import (
    BadCode,
    BadPassword,
    GatewayLink,
    HostKeyMismatch,
    LinkError,
    LockedOut,
)
from tests.gateway.gwharness import Account, World, ed25519_openssh, read_until


def login_shell(world: World, acc: Account | None = None) -> tuple[GatewayLink, paramiko.Channel]:
    agent = world.enroll_soft("t-" + (acc.name if acc else "x") + str(time.monotonic_ns()))
    acc = acc or world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    return link, link.open_shell("xterm", 80, 24)


def test_login_password_totp_and_command_output_through_the_relay(world: World) -> None:
    link, chan = login_shell(world)
    try:
        chan.send(b"echo relay-$((6*7)) && whoami\n")
        out = read_until(chan, b"relay-42")
        assert b"relay-42" in out
    finally:
        link.close()
    events = [e.event for e in world.audit_events()]
    assert "login.ok" in events and "login.attested" in events and "session.start" in events
    # the attestation is filed under the session it admitted
    start = world.audit_events("session.start")[-1].data
    with world.store() as s:
        history = s.attestation_history(start["device_id"])
    assert history[0].result == "ok" and history[0].session_id == start["session"]


def test_wrong_password(world: World) -> None:
    acc = world.add_user()
    with pytest.raises(BadPassword) as info:
        world.link().login(acc.name, acc.password + "x", acc.code())
    assert info.value.code == "bad-password" and "password" in info.value.text


def test_unknown_user_answered_like_a_wrong_password(world: World) -> None:
    with pytest.raises(BadPassword):
        world.link().login("nobody-here", "whatever-password", "000000")


def test_wrong_code(world: World) -> None:
    acc = world.add_user()
    good = acc.code()
    bad = f"{(int(good) + 1) % 1000000:06d}"
    with pytest.raises(BadCode) as info:
        world.link().login(acc.name, acc.password, bad)
    assert "one-time code" in info.value.text


def test_replayed_code_refused(world: World) -> None:
    acc = world.add_user()
    code = acc.code()
    link = world.link()
    link.login(acc.name, acc.password, code)
    link.close()
    with pytest.raises(BadCode):
        world.link().login(acc.name, acc.password, code)      # same code, same window


def test_lockout_after_max_failures(world: World) -> None:
    acc = world.add_user()
    for _ in range(4):
        with pytest.raises(BadPassword):
            world.link().login(acc.name, "wrong-" + acc.password, "000000")
    with pytest.raises(LockedOut) as info:
        world.link().login(acc.name, "wrong-" + acc.password, "000000")
    assert "until" in info.value.text and "UTC" in info.value.text
    # now even the right password is refused, with the lockout's message
    with pytest.raises(LockedOut):
        world.link().login(acc.name, acc.password, acc.code())


def test_terminal_refuses_another_host_key(world: World, tmp_path_factory: pytest.TempPathFactory
                                           ) -> None:
    other = ed25519_openssh(tmp_path_factory.mktemp("k") / "other")
    acc = world.add_user()
    link = GatewayLink("127.0.0.1", world.port, other, timeout=10)
    with pytest.raises(HostKeyMismatch):
        link.login(acc.name, acc.password, acc.code())
    # and the pinned key must be an ssh-ed25519 line
    with pytest.raises(LinkError):
        GatewayLink("127.0.0.1", world.port, "ssh-rsa AAAAB3NzaC1yc2E=")


def test_connect_early_and_answers_asked_when_prompted(world: World) -> None:
    acc = world.add_user()
    asked: list[str] = []
    link = world.link()
    t = link.connect()                                   # before anything is typed
    assert link.connect() is t and not t.is_authenticated()

    def password() -> str:
        asked.append("password")
        return acc.password

    def code() -> str:
        asked.append("code")
        return acc.code()

    link.login(acc.name, password, code)
    assert asked == ["password", "code"] and link.transport is t
    link.close()
    # a wrong password: the code is never asked for
    asked.clear()
    with pytest.raises(BadPassword):
        world.link().login(acc.name, lambda: "wrong-" + acc.password, code)
    assert asked == []


def test_on_closed_when_the_gateway_goes_away(world: World) -> None:
    agent = world.enroll_soft("closed")
    acc = world.add_user()
    link = world.link()
    closed: list[str] = []
    verdicts: list[str] = []
    done = threading.Event()
    link.on_closed = lambda reason: (closed.append(reason), done.set())
    link.on_refused = lambda step, message: verdicts.append(step)
    link.on_lock = lambda message, target: verdicts.append("locked")
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    chan = link.open_shell()
    chan.send(b"echo up\n")
    read_until(chan, b"up")
    world.stop()                                       # SIGTERM: the gateway shuts down
    try:
        assert done.wait(15) and closed and verdicts == []
        assert b"the gateway is shutting down" in read_until(chan, b"shutting down")
    finally:
        link.close()
        world.start()
