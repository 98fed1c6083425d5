"""The kiosk's console: raw line discipline, size, and signals a keyboard could raise.

In raw mode the line discipline turns no key into a signal (ISIG off, every control
character disabled), does no line editing (ICANON off), no echo, no flow control
(IXON off: Ctrl-S/Ctrl-Q are plain input) and no output processing (OPOST off, the
remote session's bytes reach the screen unchanged). A break on a serial line is
ignored (IGNBRK) and modem control lines are ignored (CLOCAL). As a second line of
defence every signal a keyboard can raise is ignored in the process as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable
from typing import Any

DEFAULT_SIZE = (80, 24)
KEYBOARD_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
                    signal.SIGTTOU)
# termios.tcgetattr indices
IFLAG, OFLAG, CFLAG, LFLAG, ISPEED, OSPEED, CC = range(7)


def raw_attrs(attrs: list[Any]) -> list[Any]:
    """A copy of tcgetattr() output switched to the kiosk's raw mode."""
    a = list(attrs)
    iflag = int(a[IFLAG])
    iflag &= ~(termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
               | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
               | termios.INPCK)
    iflag |= termios.IGNBRK
    a[IFLAG] = iflag
    a[OFLAG] = int(a[OFLAG]) & ~termios.OPOST
    cflag = int(a[CFLAG]) & ~(termios.CSIZE | termios.PARENB)
    a[CFLAG] = cflag | termios.CS8 | termios.CLOCAL | termios.CREAD
    a[LFLAG] = int(a[LFLAG]) & ~(
        termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN
        | termios.TOSTOP)
    cc = list(a[CC])
    for name in ("VINTR", "VQUIT", "VSUSP", "VEOF", "VKILL", "VERASE", "VWERASE", "VLNEXT",
                 "VREPRINT", "VDISCARD", "VSTART", "VSTOP", "VEOL", "VEOL2", "VDSUSP"):
        idx = getattr(termios, name, None)
        if idx is not None and idx < len(cc):
            cc[idx] = b"\x00"       # _POSIX_VDISABLE
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    a[CC] = cc
    return a


def is_raw(attrs: list[Any]) -> bool:
    lflag = int(attrs[LFLAG])
    iflag = int(attrs[IFLAG])
    return not lflag & (termios.ISIG | termios.ICANON | termios.ECHO | termios.IEXTEN) \
        and not iflag & (termios.IXON | termios.BRKINT)


def ignore_keyboard_signals() -> None:
    for sig in KEYBOARD_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Console:
    """The tty the kiosk owns (fd 0 from systemd's TTYPath=, or any tty for tests)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def make_raw(self) -> None:
        attrs = termios.tcgetattr(self.fd)
        if self.saved is None:
            self.saved = attrs
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, raw_attrs(attrs))

    def check_raw(self) -> bool:
        return is_raw(termios.tcgetattr(self.fd))

    def restore(self) -> None:
        if self.saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def size(self) -> tuple[int, int]:
        """(columns, rows); 80x24 when the tty does not know (a serial line)."""
        try:
            rows, cols, _, _ = struct.unpack(
                "HHHH", fcntl.ioctl(self.fd, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            return DEFAULT_SIZE
        if cols < 20 or rows < 10:
            return DEFAULT_SIZE
        return cols, rows

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                import select
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]

    def read(self, limit: int = 4096) -> bytes:
        try:
            return os.read(self.fd, limit)
        except BlockingIOError:
            return b""


class Waker:
    """A self-pipe: other threads and signal handlers wake the main loop's select()."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.w, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.r, 4096):
                pass

    def on_signal(self, sig: int, then: Callable[[], None] | None = None) -> None:
        def handler(_signum: int, _frame: object) -> None:
            if then is not None:
                then()
            self.wake()

        signal.signal(sig, handler)
