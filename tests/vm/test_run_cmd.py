"""`auditbox run`: boots an image; a stop signal or the guest powering off leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.images import BuiltImage
from tests.machine import MachineError, _SerialReader, retry

pytestmark = pytest.mark.vm


def _descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every process descended from pid."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    found: dict[int, str] = {}
    tree = {pid}
    changed = True
    while changed:
        changed = False
        for p, pp, comm in rows:
            if int(pp) in tree and int(p) not in tree:
                tree.add(int(p))
                found[int(p)] = comm
                changed = True
    return found


def _vm_processes(proc: subprocess.Popen[bytes], timeout: float = 30) -> dict[int, str]:
    """Wait until `auditbox run` has started QEMU and swtpm; their pids."""
    def started(_last_try: bool) -> dict[int, str] | None:
        kids = {p: c for p, c in _descendants(proc.pid).items()
                if c.startswith(("qemu-system", "swtpm"))}
        return kids if {c[:4] for c in kids.values()} >= {"qemu", "swtp"} else None

    return retry(started, timeout, interval=0.2, what="QEMU and swtpm under auditbox run")


def _alive(pids: dict[int, str]) -> dict[int, str]:
    alive = {}
    for pid, comm in pids.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive[pid] = comm
    return alive


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# SIGINT as from Ctrl-C, SIGINT to a job a non-interactive shell started in the background
# (it inherits SIGINT ignored: CI runners do this), and SIGTERM/SIGHUP as from kill or a
# closed terminal: each stops the run with exit 0 and leaves no QEMU or swtpm behind.
@pytest.mark.parametrize("sig,inherit_ignored", [
    (signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False),
    (signal.SIGHUP, False)], ids=["sigint", "sigint-background-job", "sigterm", "sighup"])
def test_stop_signal_stops_qemu_and_swtpm(test_image: BuiltImage, tmp_path: Path,
                                          sig: signal.Signals, inherit_ignored: bool) -> None:
    proc = subprocess.Popen(["auditbox", "run", str(test_image.image),
                             "--serial", str(tmp_path / "s0")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_ignore_sigint if inherit_ignored else None)
    try:
        vm = _vm_processes(proc)
        proc.send_signal(sig)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)
    assert _alive(vm) == {}


def test_guest_poweroff_ends_the_run(test_image: BuiltImage, tmp_path: Path) -> None:
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    proc = subprocess.Popen(["auditbox", "run", str(test_image.image), "--serial", str(s0),
                             "--serial2", str(s1)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vm = _vm_processes(proc)
        retry(lambda _last: True if s1.exists() else None, 30, 0.1, what=f"socket {s1}")
        console = _SerialReader(s0, tmp_path / "console.log")
        shell = _SerialReader(s1, tmp_path / "shell.log")

        def answered(last_try: bool) -> bool | None:
            start = len(shell.buffer)
            shell.send(b"\necho UP-$((6*7))\n")
            try:
                shell.wait_for(re.compile(b"UP-42"), start, 5)
                return True
            except MachineError:
                if last_try:
                    raise
                return None

        retry(answered, 600, interval=0, what="the test shell")
        shell.send(b"systemctl poweroff\n")
        assert proc.wait(300) == 0
        console.close()
        shell.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(30)
    time.sleep(0.5)
    assert _alive(vm) == {}
