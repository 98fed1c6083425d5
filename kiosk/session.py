"""The live session: relay between the console and the gateway's PTY channel.

Every byte typed goes to the remote side unchanged (Ctrl-C, Ctrl-Z, Ctrl-\\, Ctrl-D,
``~.`` and every other escape are the remote shell's business); every byte received
goes to the screen unchanged. The session ends when the channel closes, or when the
kiosk ends it (lock, refusal, idle timeout, injection lock): ``end`` says why.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .injection import BurstDetector, KeyboardWatcher
from .keys import count_keys
from .screens import session_notice

TAIL_BYTES = 512
RESET_SCREEN = b"\x1b[0m\x1b[?1049l\x1b[?25h\x1bc"    # leave alt screen, show cursor, reset


@dataclass
class Session:
    link: Any
    channel: Any
    burst: BurstDetector
    idle_timeout: float
    keyboards: KeyboardWatcher = field(default_factory=KeyboardWatcher)
    last_key: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    bytes_in: int = 0
    bytes_out: int = 0
    end: str | None = None            # why the kiosk ended it (None: the remote side did)
    tail: bytes = b""                 # the last output, for the gateway's closing line

    def fileno(self) -> int:
        return int(self.channel.fileno())

    def typed(self, data: bytes, now: float) -> bool:
        """Keys from the console; False if they form an injection burst (not sent)."""
        self.last_key = now
        if self.burst.feed(count_keys(data), now):
            return False
        self.channel.sendall(data)
        self.bytes_in += len(data)
        return True

    def received(self) -> bytes | None:
        """Output waiting on the channel; None once the channel has closed."""
        out = b""
        while self.channel.recv_ready():
            chunk = self.channel.recv(65536)
            if not chunk:
                break
            out += chunk
        while self.channel.recv_stderr_ready():
            out += self.channel.recv_stderr(65536)
        self.bytes_out += len(out)
        self.tail = (self.tail + out)[-TAIL_BYTES:]
        if not out and (self.channel.closed or self.channel.eof_received
                        or self.channel.exit_status_ready()):
            return None
        return out

    def gateway_said(self) -> str | None:
        """The gateway's own last line ("auditbox: ..."), when it ended the session."""
        lines = self.tail.decode("utf-8", "replace").replace("\r", "\n").split("\n")
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return last.removeprefix("auditbox: ") if last.startswith("auditbox: ") else None

    def exited(self) -> bool:
        """The remote shell ended with an exit status (not a dropped connection)."""
        # paramiko's exit_status_ready() is also true for a channel a dead transport closed
        return int(getattr(self.channel, "exit_status", -1)) >= 0

    def idle(self, now: float) -> bool:
        return now - self.last_key >= self.idle_timeout

    def close(self, why: str) -> None:
        if self.end is None:
            self.end = why
        with contextlib.suppress(Exception):
            self.channel.close()
        with contextlib.suppress(Exception):
            self.link.close()

    def alert(self, kind: str, detail: str) -> None:
        with contextlib.suppress(Exception):
            self.link.send_alert(kind, detail)

    @staticmethod
    def notice(text: str, cols: int, rows: int) -> bytes:
        return session_notice(text, cols, rows)
