"""The upstream end of a session: the research harness.

Two kinds (``upstream`` in gateway.yaml, exactly one):

- ``ssh``: an OpenSSH server. The gateway connects as the user's upstream account
  with its own client key, and accepts only the host key pinned in the config (a
  mismatch fails the session; nothing is learnt on first use). A PTY is requested
  with the terminal's type and size, then a shell; no forwarding of any kind.
- ``command``: a local command started on a new PTY in its own session, for labs
  whose harness has no SSH (the upstream account is passed as ``AUDITBOX_USER``).

Both give the same small interface: ``read()`` (bytes, b"" at the end), ``write()``,
``resize()``, ``close()``, ``exit_status``. ``read`` takes at most ``READ_SIZE`` bytes
and the upstream is not read again until the caller asks, so a slowed terminal
(the output budget) pushes back on the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path
from typing import Any, Protocol

import asyncssh

READ_SIZE = 32 * 1024


class RelayError(Exception):
    """The upstream could not be reached or refused the session."""


class Upstream(Protocol):
    exit_status: int | None

    async def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> None: ...


class SshUpstream:
    def __init__(self, conn: asyncssh.SSHClientConnection, proc: Any) -> None:
        self._conn = conn
        self._proc = proc
        self.exit_status: int | None = None

    @classmethod
    async def open(cls, host: str, port: int, host_key: str, client_key: Path, user: str,
                   term: str, cols: int, rows: int, timeout: float) -> SshUpstream:
        try:
            known = asyncssh.import_known_hosts(
                f"[{host}]:{port} {host_key}\n{host} {host_key}\n")
            conn = await asyncio.wait_for(asyncssh.connect(
                host, port, username=user, known_hosts=known,
                client_keys=[str(client_key)], agent_path=None, agent_forwarding=False,
                x11_forwarding=False, password=None, kbdint_auth=False,
                gss_host=None, preferred_auth=["publickey"], config=[]), timeout)
        except (TimeoutError, OSError, asyncssh.Error, ValueError) as exc:
            raise RelayError(f"harness {host}:{port}: {exc or type(exc).__name__}") from None
        try:
            proc = await conn.create_process(term_type=term, term_size=(cols, rows),
                                             encoding=None, request_pty="force")
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise RelayError(f"harness {host}:{port}: session refused: {exc}") from None
        return cls(conn, proc)

    async def read(self) -> bytes:
        try:
            data = await self._proc.stdout.read(READ_SIZE)
        except (asyncssh.Error, OSError):
            data = b""
        if not data:                      # the exit status follows the output's EOF
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(self._proc.wait_closed(), 5.0)
            self.exit_status = self._proc.exit_status
        return bytes(data)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self._proc.stdin.write(data)

    def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._proc.change_terminal_size(cols, rows)

    async def close(self) -> None:
        self._proc.close()
        self._conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.wait_closed(), 2.0)
        if self.exit_status is None:
            self.exit_status = self._proc.exit_status


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class CommandUpstream:
    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self._proc = proc
        self._master = master
        self._readable = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._readable.set)
        self.exit_status: int | None = None
        self._pending = bytearray()
        self._writer = False

    @classmethod
    async def open(cls, argv: tuple[str, ...], user: str, term: str, cols: int,
                   rows: int) -> CommandUpstream:
        master, slave = os.openpty()
        _set_size(slave, cols, rows)
        os.set_blocking(master, False)
        env = {"TERM": term, "AUDITBOX_USER": user,
               "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": os.environ.get("HOME", "/")}

        def controlling_tty() -> None:        # runs in the child after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                start_new_session=True, preexec_fn=controlling_tty, close_fds=True)
        except OSError as exc:
            os.close(master)
            raise RelayError(f"{argv[0]}: {exc.strerror or exc}") from None
        finally:
            os.close(slave)
        return cls(proc, master)

    async def read(self) -> bytes:
        while True:
            try:
                data = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                self._readable.clear()
                await self._readable.wait()
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:   # EIO: the child side closed
                    raise
                data = b""
            if not data:
                await self._reap()
            return data

    async def _reap(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            self.exit_status = await asyncio.wait_for(self._proc.wait(), 5.0)

    def write(self, data: bytes) -> None:
        """Input to the PTY; what the PTY cannot take now waits for it (in order)."""
        if self._pending:
            self._pending += data
            return
        self._pending = bytearray(data)
        self._flush_input()

    def _flush_input(self) -> None:
        try:
            while self._pending:
                n = os.write(self._master, self._pending)
                del self._pending[:n]
        except BlockingIOError:
            if not self._writer:
                self._writer = True
                self._loop.add_writer(self._master, self._flush_input)
            return
        except OSError:
            self._pending.clear()
        if self._writer:
            self._writer = False
            self._loop.remove_writer(self._master)

    def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(OSError):
            _set_size(self._master, cols, rows)
            if self._proc.returncode is None:
                os.killpg(self._proc.pid, signal.SIGWINCH)

    async def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGHUP)
            try:
                await asyncio.wait_for(self._proc.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                await self._proc.wait()
        self.exit_status = self._proc.returncode
        with contextlib.suppress(OSError):
            os.close(self._master)
