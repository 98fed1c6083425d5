"""Local injection detection: key bursts faster than a person types, and USB keyboards
that appear while a session is open.

Timing is taken when the kiosk reads the console, so it is a lower bound on speed: a
kiosk busy elsewhere can see a person's keys bunched (the window is generous for
that), never an injector's keys spread out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INPUT_CLASS = Path("/sys/class/input")
BUS_USB = 0x0003
# a keyboard reports letter keys: KEY_Q, KEY_A, KEY_Z (linux/input-event-codes.h)
LETTER_KEYS = (16, 30, 44)


class BurstDetector:
    """True from feed() when ``keys`` key presses arrived within ``window_ms``."""

    def __init__(self, keys: int, window_ms: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.window = window_ms / 1000.0
        self.clock = clock
        self.times: deque[float] = deque(maxlen=keys)

    def feed(self, count: int, now: float | None = None) -> bool:
        t = self.clock() if now is None else now
        for _ in range(count):
            self.times.append(t)
        if len(self.times) == self.keys and self.times[-1] - self.times[0] <= self.window:
            self.times.clear()
            return True
        return False

    def rate(self) -> float:
        """Keys per second over the remembered window (for the alert's detail)."""
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return float(len(self.times)) / self.window
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


@dataclass(frozen=True)
class InputDevice:
    node: str             # "input7"
    name: str
    phys: str


def _has_keys(bitmap: str, codes: tuple[int, ...]) -> bool:
    """capabilities/key is hex words, most significant first, 64 bits per word."""
    words = bitmap.split()
    value = 0
    for w in words:
        value = (value << 64) | int(w, 16)
    return all(value >> c & 1 for c in codes)


def usb_keyboards(root: Path = INPUT_CLASS) -> set[InputDevice]:
    found: set[InputDevice] = set()
    try:
        nodes = sorted(root.iterdir())
    except OSError:
        return found
    for node in nodes:
        if not node.name.startswith("input"):
            continue
        try:
            bustype = int((node / "id/bustype").read_text().strip(), 16)
            keys = (node / "capabilities/key").read_text()
            name = (node / "name").read_text().strip()
            phys = (node / "phys").read_text().strip() if (node / "phys").exists() else ""
        except (OSError, ValueError):
            continue
        if bustype == BUS_USB and _has_keys(keys, LETTER_KEYS):
            found.add(InputDevice(node.name, name, phys))
    return found


class KeyboardWatcher:
    """Remembers the USB keyboards present at start; check() returns new ones once."""

    def __init__(self, root: Path = INPUT_CLASS) -> None:
        self.root = root
        self.known = usb_keyboards(root)

    def check(self) -> list[InputDevice]:
        now = usb_keyboards(self.root)
        new = sorted(now - self.known, key=lambda d: d.node)
        self.known = now
        return new
