"""The relay's two upstream kinds: a local command on a PTY, and OpenSSH with a pinned key."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.gateway.gwharness import Sshd, World, ed25519_openssh, fresh_world, read_until
from tests.gateway.ssh.test_server_session import drain, shell


@pytest.fixture(scope="module")
def command_world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = fresh_world(tmp_path_factory.mktemp("cmd"), sshd, command=["/bin/sh"])
    try:
        yield w
    finally:
        w.stop()


def test_local_command_upstream(command_world: World) -> None:
    link, chan, acc = shell(command_world, "cmd")
    chan.send(b"echo cmd-$((20+22)) as $AUDITBOX_USER; tty\n")
    out = read_until(chan, b"/dev/pts/")          # a real PTY, the command's controlling tty
    assert b"cmd-42 as root" in out
    chan.send(b"stty size\n")
    read_until(chan, b"24 80")
    link.resize(100, 30)
    time.sleep(0.3)
    chan.send(b"stty size\n")
    read_until(chan, b"30 100")
    chan.send(b"exit 4\n")
    drain(chan)
    assert chan.recv_exit_status() == 4
    link.close()
    assert command_world.wait_event("session.end", acc.name).data["reason"] == "upstream-exit"


def test_harness_with_another_host_key_is_refused(sshd: Sshd,
                                                  tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    base = tmp_path_factory.mktemp("wrongkey")
    wrong = ed25519_openssh(base / "not-the-harness")
    w = World.create(base, sshd, extra="attestation:\n  allow_soft: true\nanomaly:\n  rules: []\n")
    cfg = (w.dir / "gateway.yaml").read_text().replace(sshd.host_key_line, wrong)
    (w.dir / "gateway.yaml").write_text(cfg)
    w.start()
    try:
        link, chan, acc = shell(w, "wrong-key")
        got = drain(chan)
        assert b"auditbox: the session could not start: harness 127.0.0.1" in got
        assert chan.recv_exit_status() == 1
        link.close()
        end = w.wait_event("session.end", acc.name)
        assert end.data["reason"].startswith("failed: harness")
    finally:
        w.stop()
