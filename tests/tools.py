"""What the build and VM tests need on the host; skip outside CI, fail in CI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

BUILD_TOOLS = ("mmdebstrap", "fsck.erofs", "dpkg-deb")
VM_TOOLS = ("qemu-system-x86_64", "swtpm", "socat")


def require(tools: tuple[str, ...], need_root: bool = True) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if need_root and os.geteuid() != 0:
        problems.append("not root")
    if problems:
        reason = "; ".join(problems) + " (run `make deps` as root)"
        if os.environ.get("CI"):
            pytest.fail(f"CI cannot skip: {reason}", pytrace=False)
        pytest.skip(reason)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10,
                 sig: int = signal.SIGTERM) -> None:
    """Signal a server the tests started, wait up to timeout seconds, then kill it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
