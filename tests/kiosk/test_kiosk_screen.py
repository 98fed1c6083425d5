"""The real kiosk program on a pseudo-terminal (no gateway): its login screen, raw
console, signal immunity, secret fields, enrollment screen and injection detection."""

from __future__ import annotations

import os
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kiosk.harness import AgentService, KioskOnPty, config

HOST_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f "
            "test")
NOTICE = ("AUTHORISED USE ONLY. This audit terminal and the systems it connects to are the "
          "property of the Example Lab. All activity is monitored, logged and recorded.")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentService]:
    a = AgentService(tmp_path)
    yield a
    a.stop()


def start(tmp_path: Path, agent: AgentService, cols: int = 80, rows: int = 24,
          **cfg: object) -> KioskOnPty:
    # a closed port on loopback: reachability is shown as such, nothing is ever accepted
    base: dict[str, object] = {"agent_socket": str(agent.socket), "notice": NOTICE,
                               "banner": "Example Lab\nModel audit terminal",
                               "gateway_host": "127.0.0.1", "gateway_port": 9,
                               "host_key": HOST_KEY}
    k = KioskOnPty(tmp_path, config(**{**base, **cfg}), cols, rows)
    k.start()
    return k


@pytest.fixture
def kiosk(tmp_path: Path, agent: AgentService) -> Iterator[KioskOnPty]:
    k = start(tmp_path, agent)
    yield k
    k.stop()


def test_login_screen_fits_80x24_and_shows_everything(kiosk: KioskOnPty) -> None:
    screen = kiosk.wait_for(r"Terminal +soft-[0-9a-f]{32}")
    lines = screen.splitlines()
    assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
    for text in ("Example Lab", "Model audit terminal", "AUTHORISED USE ONLY",
                 "property of the Example Lab", "(soft attestation)", "Enrollment  NOT ENROLLED",
                 "Gateway     127.0.0.1:9", "Time        20", "User name:", "Password:",
                 "One-time code:", "F2 or Ctrl-E: enroll"):
        assert text in screen, text
    kiosk.wait_for(r"UNREACHABLE \(Connection refused\)")


def test_redraws_on_resize(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    kiosk.set_size(132, 43)
    screen = kiosk.wait_for(r"(?m)^ {55,}Example Lab", timeout=10)
    lines = screen.splitlines()
    assert len(lines) == 43 and len(lines[0]) == 132
    banner = next(line for line in lines if "Example Lab" in line)
    # centred in a 98-column content column that is itself centred in 132 columns
    assert banner.index("Example Lab") > 55, banner
    assert any("User name:" in line for line in lines)


def test_console_is_raw_and_keyboard_signals_do_nothing(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    attrs = kiosk.attrs()
    lflag, iflag = attrs[3], attrs[0]
    assert isinstance(lflag, int) and isinstance(iflag, int)
    assert not lflag & termios.ISIG, "ISIG is on: Ctrl-C would raise SIGINT"
    assert not lflag & (termios.ICANON | termios.ECHO | termios.IEXTEN)
    assert not iflag & (termios.IXON | termios.BRKINT)
    pid = kiosk.proc.pid if kiosk.proc else 0
    kiosk.type("ab")
    for key in (b"\x03", b"\x1c", b"\x1a", b"\x04", b"\x7f\x7f"):   # ^C ^\ ^Z ^D, erase
        kiosk.type(key)
    time.sleep(1)
    assert kiosk.alive() and kiosk.proc is not None and kiosk.proc.pid == pid
    screen = kiosk.wait_for("User name:")
    assert "> User name:" in screen and "ab" not in screen.split("User name:")[1].split("\n")[0]
    # and with the line discipline back to cooked, ^C would kill a process that did not
    # ignore SIGINT: the kiosk ignores the keyboard's signals as a second line of defence
    cooked = kiosk.attrs()
    cooked[3] = int(cooked[3]) | termios.ISIG  # type: ignore[call-overload]
    cc = list(cooked[6])  # type: ignore[call-overload]
    cc[termios.VINTR], cc[termios.VQUIT], cc[termios.VSUSP] = b"\x03", b"\x1c", b"\x1a"
    cooked[6] = cc
    termios.tcsetattr(kiosk.slave, termios.TCSANOW, cooked)
    for key in (b"\x03", b"\x1c", b"\x1a"):
        os.write(kiosk.master, key)
        time.sleep(0.5)
    assert kiosk.alive()
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ", 1)[1][0] != "T", "stopped by SIGTSTP"


def test_password_and_code_are_never_echoed(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    kiosk.type("\t")                      # to the password field without a user name
    kiosk.type("Sup3rSecret!\t")
    kiosk.type("123456")
    time.sleep(1)
    screen = kiosk.text()
    assert "(hidden)" in screen
    with kiosk.lock:
        raw = bytes(kiosk.raw)
    assert b"Sup3rSecret" not in raw and b"123456" not in raw and b"*" not in raw


def test_enroll_screen_and_back(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    kiosk.type(b"\x1bOQ")                 # F2 (VT100)
    screen = kiosk.wait_for("Enroll this terminal")
    assert "Enrollment token:" in screen
    kiosk.type("tok-123")
    kiosk.wait_for("Enrollment token: tok-123")        # echoed: it is typed by an admin
    kiosk.type(b"\x1b")
    kiosk.wait_for("> User name:")
    kiosk.type(b"\x05")                   # Ctrl-E, for consoles without function keys
    kiosk.wait_for("Enroll this terminal")


def test_login_goes_to_the_gateway_and_says_why_it_failed(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    kiosk.type("alice\r")
    kiosk.type("pw\r")
    kiosk.type("000000\r")
    screen = kiosk.wait_for(r"Cannot reach the gateway|Log-in failed", timeout=30)
    assert "127.0.0.1:9" in screen
    assert "> Password:" in screen and "alice" in screen      # user kept, secrets cleared


def test_keystroke_burst_on_the_login_screen_is_discarded(kiosk: KioskOnPty) -> None:
    kiosk.wait_for("User name:")
    kiosk.paste(b"x" * 40 + b"\r")
    screen = kiosk.wait_for("faster than a person")
    assert "xxxx" not in screen


def test_no_gateway_configured(tmp_path: Path, agent: AgentService) -> None:
    k = start(tmp_path, agent, gateway_host=None, host_key=None)
    try:
        k.wait_for("Gateway     not configured on this image")
        k.type("alice\r")
        k.wait_for("This image has no gateway configured")
    finally:
        k.stop()


def test_misconfigured_terminal_says_so(tmp_path: Path, agent: AgentService) -> None:
    k = KioskOnPty(tmp_path, config(agent_socket=str(agent.socket)))
    k.start(raw_config='{"format": 1, "surprise": true}')
    try:
        screen = k.wait_for("misconfigured")
        assert "unknown keys ['surprise']" in screen
        time.sleep(1)
        assert k.alive()            # it waits there; it never exits to anything
    finally:
        k.stop()
