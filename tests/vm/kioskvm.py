"""Reading and typing on the kiosk's console (ttyS0 on the test image) like a person:
the screen is what a VT220 shows after the console's bytes (pyte), keys go one by one."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyte

from tests.machine import Machine

KEY_DELAY = 0.06     # seconds between keys: a quick typist, well under the burst rule
CTRL = {"c": b"\x03", "d": b"\x04", "z": b"\x1a", "backslash": b"\x1c", "e": b"\x05"}
F2 = b"\x1bOQ"


def screen(machine: Machine, since: int = 0, cols: int = 80, rows: int = 24) -> str:
    scr = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(scr)
    assert machine.console is not None
    with machine.console.cond:
        data = bytes(machine.console.buffer[since:])
    stream.feed(data)
    return "\n".join(scr.display)


def wait_screen(machine: Machine, pattern: str, timeout: float = 120.0, since: int = 0) -> str:
    """Wait until the console, as drawn, matches pattern (re.M); return the screen."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while True:
        shown = screen(machine, since)
        if rx.search(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not on the console after {timeout:.0f}s:\n{shown}")
        time.sleep(0.25)


def type_keys(machine: Machine, keys: str | bytes, delay: float = KEY_DELAY) -> None:
    data = keys.encode() if isinstance(keys, str) else keys
    for chunk in re.findall(rb"\x1b(?:\[[0-9;]*[~A-Za-z]|O.)|.", data, re.S):
        _send(machine, chunk)
        time.sleep(delay)


def _send(machine: Machine, data: bytes) -> None:
    assert machine.console is not None
    machine.console.send(data)


def kiosk_pid(machine: Machine) -> int:
    return int(machine.succeed("systemctl show -P MainPID auditbox-kiosk.service").strip())


CAPTURES = Path(__file__).resolve().parents[2] / "build" / "screens"


def capture(machine: Machine, name: str, since: int = 0) -> str:
    """Save the console as drawn now (for docs/auditor-guide.md) and return it."""
    shown = screen(machine, since)
    CAPTURES.mkdir(parents=True, exist_ok=True)
    (CAPTURES / f"{name}.txt").write_text(
        "\n".join(line.rstrip() for line in shown.splitlines()) + "\n")
    return shown
