"""Per-run places, so that two test runs (or a test run and a bench) can share a machine.

Everything a run writes (built images and their extracted trees, VM logs, check results)
goes under one run directory:
- `$AUDITBOX_RUN_DIR` if set (`make test` sets it, so that its report step finds the
  images and results of the run it just made);
- otherwise a new `build/runs/run-XXXXXX`, made by the first call in this process.

A run holds a shared lock on `RUNDIR/.lock` for as long as its process lives. When a new
run directory is made, finished runs (lock free) beyond the newest `KEEP` are deleted, so
disk use stays bounded while another engineer's run, still holding its lock, is left alone.

The other shared resources are per run too: VM sockets live in a fresh temporary
directory per machine (tests/machine.py), and host listeners bind free ports, reached
from the guest at the images' baked address through QEMU guestfwd (tests/conftest.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "build" / "runs"
ENV = "AUDITBOX_RUN_DIR"
KEEP = 2              # finished runs kept besides the live ones (their logs and reports)

_current: Path | None = None
_lock: IO[bytes] | None = None


def run_dir() -> Path:
    """This run's directory (created and locked on first use)."""
    global _current, _lock
    if _current is None:
        given = os.environ.get(ENV)
        if given:
            path = Path(given).resolve()
            path.mkdir(parents=True, exist_ok=True)
        else:
            RUNS.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS))
        _lock = (path / ".lock").open("ab")
        fcntl.flock(_lock, fcntl.LOCK_SH)
        _current = path
        if not given:
            prune(RUNS, keep=KEEP, current=path)
    return _current


def prune(runs: Path, keep: int, current: Path) -> list[Path]:
    """Delete finished runs under runs/ except the newest `keep`; return what was deleted."""
    candidates = sorted((p for p in runs.iterdir() if p.is_dir() and p != current),
                        key=_started, reverse=True)
    removed = []
    for old in candidates[keep:]:
        try:
            with (old / ".lock").open("ab") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while a run holds it
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
        except OSError:
            continue
    return removed


def _started(run: Path) -> float:
    # the lock file is made with the run and never written: its mtime is the start time
    lock = run / ".lock"
    return (lock if lock.exists() else run).stat().st_mtime


def images_dir() -> Path:
    """Where build_image puts images ($AUDITBOX_TEST_IMAGES overrides)."""
    given = os.environ.get("AUDITBOX_TEST_IMAGES")
    return Path(given) if given else run_dir() / "images"


def logs_dir() -> Path:
    """Serial consoles, shells and QEMU logs of the run's machines."""
    path = run_dir() / "test-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_results() -> Path:
    """The rule checks' results file ($AUDITBOX_CHECK_RESULTS overrides)."""
    given = os.environ.get("AUDITBOX_CHECK_RESULTS")
    return Path(given) if given else run_dir() / "check-results.json"
