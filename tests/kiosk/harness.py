"""Run the real kiosk on a pseudo-terminal, with the real attestation agent service
(soft backend, state in a temporary directory), and read its screen through pyte.

The kiosk gets the pty as its controlling terminal, as systemd's TTYPath= gives it the
console, so a key that raised a signal would reach it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyte

from kiosk.config import KioskConfig, to_json

REPO = Path(__file__).resolve().parents[2]


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class AgentService:
    """auditbox-attest-agent on a socket in tmp (soft backend)."""

    def __init__(self, tmp: Path, backend: str = "soft", *extra: str) -> None:
        self.socket = tmp / "agent.sock"
        self.state = tmp / "state"
        self.log = (tmp / "agent.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attestation.agent_service", "--backend", backend,
             "--socket", str(self.socket), "--state", str(self.state),
             "--tpm-cache", str(tmp / "tpm-cache"), *extra],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the agent service did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class KioskOnPty:
    def __init__(self, tmp: Path, cfg: KioskConfig, cols: int = 80, rows: int = 24) -> None:
        self.tmp = tmp
        self.cfg = cfg
        self.cols, self.rows = cols, rows
        self.config = tmp / "kiosk.json"
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.lock = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self.master = -1
        self.slave = -1

    def start(self, raw_config: str | None = None) -> None:
        self.config.write_text(to_json(self.cfg) if raw_config is None else raw_config)
        self.master, self.slave = pty.openpty()
        self.set_size(self.cols, self.rows, signal_kiosk=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.main", "--config", str(self.config)],
            cwd=REPO, stdin=self.slave, stdout=self.slave, stderr=subprocess.PIPE,
            preexec_fn=_controlling_tty, env={**os.environ, "TERM": "vt220"})
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.lock.notify_all()
                    return
                self.raw += data
                self.stream.feed(data)
                self.lock.notify_all()

    def set_size(self, cols: int, rows: int, signal_kiosk: bool = True) -> None:
        self.cols, self.rows = cols, rows
        with self.lock:
            self.screen.resize(rows, cols)
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # the kernel sends SIGWINCH to the foreground process group itself

    def type(self, text: str | bytes, delay: float = 0.03) -> None:
        """Type like a person: one key at a time (escape sequences whole)."""
        data = text.encode() if isinstance(text, str) else text
        for chunk in re.findall(rb"\x1b\[[0-9;]*[~A-Za-z]|\x1bO.|.", data, re.S):
            os.write(self.master, chunk)
            time.sleep(delay)

    def paste(self, data: bytes) -> None:
        """Everything at once, as a keystroke injector would."""
        os.write(self.master, data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                shown = "\n".join(self.screen.display)
                if rx.search(shown):
                    return shown
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{pattern!r} not on screen after {timeout}s:\n{shown}")
                self.lock.wait(min(left, 0.2))

    def attrs(self) -> list[object]:
        return termios.tcgetattr(self.slave)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def config(**changes: object) -> KioskConfig:
    return replace(KioskConfig(), **changes)  # type: ignore[arg-type]
