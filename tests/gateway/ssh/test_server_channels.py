"""Everything but one control channel and one PTY session is refused AND audited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paramiko
import pytest

from kiosk import protocol
from kiosk.gateway_link import GatewayLink
from tests.gateway.gwharness import World, read_until


@pytest.fixture(scope="module")
def attested(world: World) -> Any:
    agent = world.enroll_soft("channels")
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    yield link, acc
    link.close()


def refused_kinds(world: World, user: str, since: int,
                  expect: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The channel.refused entries of ``user`` after ``since`` (the audit writes are
    asynchronous: waits up to 10 s for ``expect`` to appear)."""
    deadline = time.monotonic() + 10
    while True:
        found = [(e.data["kind"], e.data["detail"])
                 for e in world.audit_events("channel.refused")
                 if e.actor == user and e.seq > since]
        if expect is None or expect in found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def last_seq(world: World) -> int:
    return world.audit_events()[-1].seq


def _on_session(request: Callable[[paramiko.Channel], Any]) -> Callable[[paramiko.Transport],
                                                                        None]:
    def action(t: paramiko.Transport) -> None:
        ch = t.open_session()
        try:
            if request(ch) is False:
                raise paramiko.SSHException("refused")
        finally:
            ch.close()
    return action


def _request(ch: paramiko.Channel, name: str, *strings: str) -> None:
    """A channel request that asks for a reply (paramiko's own env and agent requests
    do not): raises SSHException when the gateway answers failure."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(ch.remote_chanid)
    m.add_string(name)
    m.add_boolean(True)
    for text in strings:
        m.add_string(text)
    ch._event_pending()
    ch.transport._send_user_message(m)
    ch._wait_for_event()


_exec = _on_session(lambda ch: ch.exec_command("id"))
_scp = _on_session(lambda ch: ch.exec_command("scp -t /tmp"))
_sftp = _on_session(lambda ch: ch.invoke_subsystem("sftp"))
_env = _on_session(lambda ch: _request(ch, "env", "LC_EVIL", "1"))
_x11 = _on_session(lambda ch: ch.request_x11())
_agent_fwd = _on_session(lambda ch: _request(ch, "auth-agent-req@openssh.com"))
_second_control = _on_session(lambda ch: ch.invoke_subsystem(protocol.SUBSYSTEM))


def _direct_tcpip(t: paramiko.Transport) -> None:
    t.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 4000))


def _tcpip_forward(t: paramiko.Transport) -> None:
    if t.request_port_forward("127.0.0.1", 0) is None:
        raise paramiko.SSHException("refused")


def _odd_channel(t: paramiko.Transport) -> None:
    t.open_channel("x11", src_addr=("127.0.0.1", 6000))


CASES: list[tuple[str, Callable[[paramiko.Transport], None], str]] = [
    ("exec", _exec, "id"),
    ("scp", _scp, "scp -t /tmp"),
    ("sftp", _sftp, "sftp"),
    ("env", _env, "LC_EVIL"),
    ("x11", _x11, ""),
    ("agent", _agent_fwd, ""),
    ("direct-tcpip", _direct_tcpip, "127.0.0.1:22"),
    ("tcpip-forward", _tcpip_forward, "127.0.0.1:0"),
    ("second-control", _second_control, protocol.SUBSYSTEM),
    ("channel-type", _odd_channel, "x11"),
]
KIND = {"scp": "exec", "sftp": "subsystem", "second-control": "subsystem",
        "channel-type": "channel"}


@pytest.mark.parametrize("name, action, detail", CASES, ids=[c[0] for c in CASES])
def test_refused_and_audited(world: World, attested: Any, name: str,
                             action: Callable[[paramiko.Transport], None], detail: str) -> None:
    link, acc = attested
    since = last_seq(world)
    with pytest.raises((paramiko.SSHException, paramiko.ChannelException, EOFError)):
        action(link.transport)
    want = (KIND.get(name, name), detail)
    assert want in refused_kinds(world, acc.name, since, want)
    assert link.transport.is_active()         # a refusal does not end an attested session


def test_third_session_channel_refused(world: World) -> None:
    agent = world.enroll_soft("third")
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    shell = link.open_shell()
    since = last_seq(world)
    with pytest.raises(paramiko.ChannelException):
        link.transport.open_session()
    want = ("session-extra", "session channel #3")
    assert want in refused_kinds(world, acc.name, since, want)
    shell.send(b"echo still-$((1+1))\n")
    read_until(shell, b"still-2")
    link.close()


def test_shell_before_attestation_gets_the_refusal_line(world: World) -> None:
    acc = world.add_user()
    link = GatewayLink("127.0.0.1", world.port, world.host_key_line)
    link.login(acc.name, acc.password, acc.code())
    since = last_seq(world)
    chan = link.open_shell()
    out = read_until(chan, b"terminals")
    assert protocol.ATTESTATION_REFUSAL.encode() in out
    while not chan.exit_status_ready():
        time.sleep(0.05)
    assert chan.recv_exit_status() == 1
    assert ("shell", "attestation") in refused_kinds(world, acc.name, since,
                                                     ("shell", "attestation"))
    link.close()
