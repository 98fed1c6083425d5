"""The lock watcher: a lock issued anywhere ends matching live sessions here.

Every ``POLL`` seconds (250 ms) it reads ``Store.locks_version()``, a counter every
lock change bumps (the CLI in another process, another replica, an anomaly rule);
when it moved, or at least every ``FULL`` seconds, it reads the active locks and ends
every authenticated connection of this process whose user or device is locked:
``locked`` on the control channel, the lock's message on the PTY, exit status 1,
disconnect. Locks live in the store, so they survive restarts and expire at their
TTL there.

If the store cannot be read the watcher marks the service unavailable (new log-ins
already fail closed in auth); live sessions then end at their next re-attestation,
which needs the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from . import locks
from .store.base import Lock, Store, StoreError

if TYPE_CHECKING:
    from .server import Service

POLL = 0.25
FULL = 5.0
log = logging.getLogger("auditbox.gateway")


class LockWatcher:
    def __init__(self, store: Store, svc: Service) -> None:
        self.store = store
        self.svc = svc
        self._task: asyncio.Task[None] | None = None
        self.ended = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        version: int | None = None
        last_full = 0.0
        while True:
            try:
                v = await asyncio.to_thread(self.store.locks_version)
                now = time.monotonic()
                if v != version or now - last_full >= FULL:
                    active = await asyncio.to_thread(self.store.active_locks, time.time())
                    version, last_full = v, now
                    await self._apply(active)
                if not self.svc.store_ok:
                    log.warning("store readable again")
                self.svc.store_ok = True
            except StoreError as exc:
                if self.svc.store_ok:
                    log.error("store unreadable, failing closed: %s", exc)
                self.svc.store_ok = False
            except Exception:  # the watcher must outlive any one bad round
                log.exception("lock watcher round failed")
            await asyncio.sleep(POLL)

    async def _apply(self, active: list[Lock]) -> None:
        for c in list(self.svc.connections):
            if c.user is None or c.closing:
                continue
            lock = locks.matching(active, user=c.user.name, device_id=c.device_id)
            if lock is None:
                continue
            self.ended += 1
            await c.end(f"auditbox: locked: {locks.message(lock)}", f"lock:{lock.id}",
                        locked=lock.target_kind)
            with contextlib.suppress(Exception):
                await self.svc.audit("lock.enforced", "system", lock=lock.id, user=c.user.name,
                                     device_id=c.device_id,
                                     session=c.pty.id if c.pty else None)
