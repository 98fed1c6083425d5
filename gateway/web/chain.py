"""The audit chain's verification state, for the console.

Verifying the whole chain (``gateway.audit.verify``) hashes every entry: about a
second per 100,000 entries here, far too slow for a page. So the console verifies in
the background, at start and every ``web.audit_verify_interval`` (and when someone
presses "verify now"), in a worker thread, one run at a time, and pages show the
last result: when it ran, how many entries it covered, and the first edited, dropped
or reordered entry if any.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from ..audit import VerifyResult, verify
from ..store.base import Store, StoreError

log = logging.getLogger("auditbox.gateway.web")


@dataclass(frozen=True)
class ChainState:
    result: VerifyResult | None       # None: not verified yet
    checked_at: float | None
    seconds: float
    last_seq: int                     # the newest entry covered
    error: str | None = None          # the store could not be read


class ChainWatch:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._run_lock = threading.Lock()
        self.state = ChainState(None, None, 0.0, 0)
        self._task: asyncio.Task[None] | None = None

    def verify_now(self) -> ChainState:
        """Verify the whole chain (blocking; one run at a time) and remember the result."""
        with self._run_lock:
            t0 = time.monotonic()
            try:
                entries = list(self.store.audit_entries())
                result = verify(entries)
                state = ChainState(result, time.time(), time.monotonic() - t0,
                                   entries[-1].seq if entries else 0)
            except StoreError as exc:
                state = ChainState(self.state.result, time.time(), time.monotonic() - t0,
                                   self.state.last_seq, error=str(exc)[:300])
            self.state = state
            if state.result is not None and not state.result.ok:
                log.error("audit chain broken: %s", state.result.message)
            return state

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.verify_now)
            except Exception:          # the watcher must outlive one bad round
                log.exception("audit chain check failed")
            await asyncio.sleep(self.interval)
