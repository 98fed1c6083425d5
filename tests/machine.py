"""A booted image under QEMU, driven like the NixOS test driver's Machine.

ttyS0 (console, and the kiosk on test images) and ttyS1 (the test image's root shell)
are UNIX sockets; QMP is a third. Commands run over the ttyS1 shell: each is sent base64
encoded and its exit status, stdout and stderr come back base64 encoded between markers,
so no output can be confused with the protocol.

Nothing is fixed per machine, so that two test runs can share a host: the sockets live in
a fresh temporary directory, logs in the run's directory (tests/rundir.py), and
`host_forwards={guest_port: host_port}` lets the guest reach a host server listening on
any (free) port at the address the images bake in, USERNET_HOST:guest_port. QEMU refuses
a guestfwd on user-net's own host address, so with forwards the host alias moves to
RELAY_HOST and 10.0.2.2 becomes a guestfwd address whose connections QEMU hands to
`socat - TCP:127.0.0.1:<host_port>` (one process per connection). Only the forwarded
ports of 10.0.2.2 answer then; any other port there is closed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from builder.qemu import QemuVM, VMConfig
from tests.rundir import logs_dir

DEFAULT_TIMEOUT = 600.0
USERNET_HOST = "10.0.2.2"   # QEMU user-net's host address; profiles' kiosk.gateway_host
RELAY_HOST = "10.0.2.9"     # user-net's host alias when 10.0.2.2 is a guestfwd address
T = TypeVar("T")


def retry(attempt: Callable[[bool], T | None], timeout: float = DEFAULT_TIMEOUT,
          interval: float = 1.0, what: str = "condition") -> T:
    """Call attempt(last_try) every `interval` seconds until it returns something other
    than None, and return that (the NixOS test driver's `retry`). The call made at the
    deadline gets last_try=True, so it can raise with what it saw; if it still returns
    None, MachineError names `what` and the timeout. An exception from attempt ends the
    wait at once: raise one for states that will not get better (a failed unit)."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        result = attempt(last_try)
        if result is not None:
            return result
        if last_try:
            raise MachineError(f"{what}: not reached after {timeout:.0f}s")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


class MachineError(AssertionError):
    pass


class _SerialReader:
    """Collects everything a serial socket sends; also writes it to a log file."""

    def __init__(self, path: Path, log: Path) -> None:
        self.sock = _connect(path)
        self.buffer = bytearray()
        self.cond = threading.Condition()
        self.log = log.open("ab")
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.cond.notify_all()
                    self.closed = True
                    return
                self.buffer += data
                if not self.log.closed:
                    self.log.write(data)
                    self.log.flush()
                self.cond.notify_all()

    closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_for(self, pattern: re.Pattern[bytes], start: int, timeout: float) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = pattern.search(self.buffer, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise MachineError(f"timed out after {timeout:.0f}s waiting for "
                                       f"{pattern.pattern!r}")
                self.cond.wait(min(left, 1.0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        with self.cond:          # the pump writes under the same lock
            self.log.close()


def _connect(path: Path, timeout: float = 30) -> socket.socket:
    def attempt(last_try: bool) -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if last_try:
                raise
            return None

    return retry(attempt, timeout, interval=0.1, what=f"connect to {path}")


class QMP:
    def __init__(self, path: Path) -> None:
        self.sock = _connect(path)
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise MachineError("QMP connection closed")
        result: dict[str, Any] = json.loads(line)
        return result

    def command(self, name: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise MachineError(f"QMP {name}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        self.sock.close()


class Machine:
    def __init__(self, image: Path, name: str = "machine", log_dir: Path | None = None,
                 extra_args: list[str] | None = None, tpm: bool = True,
                 memory_mb: int = 2048, hostfwd: list[str] | None = None,
                 vars_file: Path | None = None, secure_boot: bool = False,
                 host_forwards: dict[int, int] | None = None, disk_bytes: int | None = None,
                 tpm_state: Path | None = None) -> None:
        self.name = name
        self.log_dir = (log_dir or logs_dir()).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # short path: UNIX socket paths are limited to 108 bytes
        self.sockets = Path(tempfile.mkdtemp(prefix=f"ab-{name[:20]}-"))
        self.config = VMConfig(
            image=image, memory_mb=memory_mb, tpm=tpm,
            serials=[str(self.sockets / "ttyS0"), str(self.sockets / "ttyS1")],
            qmp=self.sockets / "qmp", hostfwd=hostfwd or [], secure_boot=secure_boot,
            vars_file=vars_file, extra_args=extra_args or [],
            guestfwd=[relay(guest, host) for guest, host in (host_forwards or {}).items()],
            net_host=RELAY_HOST if host_forwards else None, disk_bytes=disk_bytes,
            tpm_state=tpm_state)
        self.vm: QemuVM | None = None
        self.console: _SerialReader | None = None
        self.shell: _SerialReader | None = None
        self._qmp: QMP | None = None
        self._shell_ready = False
        self.booted_at = 0.0

    # lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        for name in ("console.log", "shell.log", "qemu.log"):
            (self.log_dir / f"{self.name}-{name}").unlink(missing_ok=True)
        self.sockets.mkdir(exist_ok=True)
        self.vm = QemuVM(self.config, log_path=self.log_dir / f"{self.name}-qemu.log")
        self.vm.start()
        self.booted_at = time.monotonic()
        self.console = _SerialReader(self.sockets / "ttyS0",
                                     self.log_dir / f"{self.name}-console.log")
        self.shell = _SerialReader(self.sockets / "ttyS1", self.log_dir / f"{self.name}-shell.log")

    def is_up(self) -> bool:
        return self.vm is not None and self.vm.running()

    def stop(self) -> None:
        for closable in (self._qmp, self.console, self.shell):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        if self.vm is not None:
            self.vm.stop()
        shutil.rmtree(self.sockets, ignore_errors=True)
        self._qmp = self.console = self.shell = None
        self._shell_ready = False

    def shutdown(self, timeout: float = 120) -> None:
        """Power the guest off cleanly and wait for QEMU to exit."""
        if self.is_up():
            self.execute("systemctl poweroff --no-block", timeout=30)
            with contextlib.suppress(MachineError):   # stop() below ends it anyway
                retry(lambda _last: True if not self.is_up() else None, timeout, 0.5,
                      "QEMU exits after poweroff")
        self.stop()

    def console_text(self) -> str:
        assert self.console is not None
        with self.console.cond:
            return self.console.buffer.decode("utf-8", "replace")

    # waiting -----------------------------------------------------------------------
    def wait_for_console_text(self, regex: str, timeout: float = DEFAULT_TIMEOUT,
                              since: int = 0) -> str:
        assert self.console is not None
        m = self.console.wait_for(re.compile(regex.encode()), since, timeout)
        return m.group(0).decode("utf-8", "replace")

    def console_mark(self) -> int:
        assert self.console is not None
        with self.console.cond:
            return len(self.console.buffer)

    def wait_for_shell(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._shell_ready:
            return
        shell = self.shell
        assert shell is not None
        token = secrets.token_hex(8)

        def answered(last_try: bool) -> bool | None:
            start = len(shell.buffer)
            # the marker is computed by the shell, so the tty's echo of this line never matches
            shell.send(f"\nstty -echo -onlcr 2>/dev/null; echo READY-$((6*7))-{token}\n"
                       .encode())
            try:
                shell.wait_for(re.compile(f"READY-42-{token}".encode()), start, 5)
                return True
            except MachineError:
                if last_try or not self.is_up():
                    raise MachineError("the test shell on ttyS1 never answered") from None
                return None

        retry(answered, timeout, interval=0, what="the test shell on ttyS1")
        self._shell_ready = True

    def wait_for_unit(self, unit: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        def active(last_try: bool) -> bool | None:
            state = self.execute(f"systemctl is-active {unit}")[1].strip()
            if state == "failed":
                raise MachineError(f"unit {unit} failed")
            if state != "active" and last_try:
                raise MachineError(f"unit {unit} not active after {timeout:.0f}s ({state})")
            return True if state == "active" else None

        retry(active, timeout, what=f"unit {unit}")

    def wait_until_succeeds(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        def succeeds(last_try: bool) -> str | None:
            rc, out = self.execute(command)
            if rc != 0 and last_try:
                raise MachineError(f"{command!r} did not succeed in {timeout:.0f}s: {out}")
            return out if rc == 0 else None

        return retry(succeeds, timeout, what=command)

    # commands ----------------------------------------------------------------------
    def run(self, command: str, timeout: float = 300) -> tuple[int, bytes, bytes]:
        """Run command in the guest: (exit status, stdout, stderr). It runs in a subshell
        with `set -o pipefail` (as in the NixOS driver), so a failing stage of a pipeline
        fails the command and an `exit` in it cannot end the test shell."""
        self.wait_for_shell()
        assert self.shell is not None
        token = secrets.token_hex(8)
        encoded = base64.b64encode(command.encode()).decode()
        line = (f"( set -o pipefail; eval \"$(printf %s {encoded} | base64 -d)\" ) </dev/null "
                f">/tmp/.ab-out 2>/tmp/.ab-err; __r=$?; echo \"<{token} $__r "
                f"$(base64 -w0 </tmp/.ab-out) $(base64 -w0 </tmp/.ab-err) {token}>\"\n")
        start = len(self.shell.buffer)
        self.shell.send(line.encode())
        pattern = re.compile(rf"<{token} (\d+) ([A-Za-z0-9+/=]*) ([A-Za-z0-9+/=]*) {token}>"
                             .encode())
        m = self.shell.wait_for(pattern, start, timeout)
        return int(m.group(1)), base64.b64decode(m.group(2)), base64.b64decode(m.group(3))

    def execute(self, command: str, timeout: float = 300) -> tuple[int, str]:
        rc, out, err = self.run(command, timeout)
        return rc, (out + err).decode("utf-8", "replace")

    def succeed(self, command: str, timeout: float = 300) -> str:
        rc, out, err = self.run(command, timeout)
        if rc != 0:
            raise MachineError(f"command failed ({rc}): {command}\n{(out + err).decode()}")
        return out.decode("utf-8", "replace")

    def fail(self, command: str, timeout: float = 300) -> str:
        rc, out, err = self.run(command, timeout)
        if rc == 0:
            raise MachineError(f"command unexpectedly succeeded: {command}\n{out.decode()}")
        return (out + err).decode("utf-8", "replace")

    # input -------------------------------------------------------------------------
    def send_chars(self, text: str) -> None:
        """Type text on the console (ttyS0: the kiosk on test images)."""
        assert self.console is not None
        self.console.send(text.encode())

    def send_key(self, keys: str) -> None:
        """Press keys together through QMP, e.g. "ctrl-alt-f2" or "alt-sysrq-b"."""
        self.qmp("send-key", keys=[{"type": "qcode", "data": k} for k in keys.split("-")])

    def qmp(self, command: str, **arguments: Any) -> Any:
        if self._qmp is None:
            assert self.config.qmp is not None
            self._qmp = QMP(self.config.qmp)
        return self._qmp.command(command, **arguments)


def relay(guest_port: int, host_port: int) -> str:
    """guestfwd spec: the guest's USERNET_HOST:guest_port reaches 127.0.0.1:host_port."""
    return f"tcp:{USERNET_HOST}:{guest_port}-cmd:socat - TCP:127.0.0.1:{host_port}"
