"""The lock watcher: a lock issued anywhere ends matching live sessions here.

It reads ``Store.locks_version()``, a counter every lock change bumps (the CLI in
another process, another replica, an anomaly rule), when woken and at least every
``POLL`` seconds (250 ms); when it moved, or at least every ``FULL`` seconds, it reads
the active locks and ends every authenticated connection of this process whose user
or device is locked: ``locked`` on the control channel, the lock's message on the
PTY, exit status 1, disconnect. Locks live in the store, so they survive restarts and
expire at their TTL there.

On PostgreSQL a listener thread holds ``LISTEN auditbox_locks``
(``Store.lock_listener()``) and wakes the watcher the moment a lock change commits on
any replica; the poll stays as the backstop (a lost LISTEN connection is reopened
every ``RELISTEN`` seconds meanwhile). Each round that finds the version moved counts
in ``auditbox_lock_wakeups_total{source=notify|poll}``; each session a lock ends adds
its delay since the lock's commit to ``auditbox_lock_propagation_seconds``.

If the store cannot be read the watcher marks the service unavailable (new log-ins
already fail closed in auth); live sessions then end at their next re-attestation,
which needs the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from . import locks, metrics
from .store.base import Lock, LockListener, Store, StoreError

if TYPE_CHECKING:
    from .server import Service

POLL = 0.25
FULL = 5.0
RELISTEN = 1.0
log = logging.getLogger("auditbox.gateway")


class LockWatcher:
    def __init__(self, store: Store, svc: Service) -> None:
        self.store = store
        self.svc = svc
        self._task: asyncio.Task[None] | None = None
        self.ended = 0
        self.listening = False
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._listener = threading.Thread(target=self._listen, args=(loop,),
                                          name="lock-listen", daemon=True)
        self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    # -- the LISTEN thread ----------------------------------------------------------------
    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold LISTEN; wake the watcher on every notification; reopen when lost."""
        while not self._stop.is_set():
            listener: LockListener | None = None
            try:
                listener = self.store.lock_listener()
                if listener is None:
                    return
                self.listening = True
                loop.call_soon_threadsafe(self._wake.set)     # catch up after (re)connect
                while not self._stop.is_set():
                    if listener.wait(1.0):
                        loop.call_soon_threadsafe(self._wake.set)
            except StoreError as exc:
                if self.listening:
                    log.warning("lock notifications lost, polling meanwhile: %s", exc)
            except RuntimeError:              # the loop closed: the server is stopping
                return
            finally:
                self.listening = False
                if listener is not None:
                    with contextlib.suppress(Exception):
                        listener.close()
            self._stop.wait(RELISTEN)

    async def _sleep(self) -> str:
        """Until woken by a notification ("notify") or the poll interval ("poll")."""
        try:
            await asyncio.wait_for(self._wake.wait(), POLL)
        except TimeoutError:
            return "poll"
        self._wake.clear()
        return "notify"

    # -- the watcher ------------------------------------------------------------------------
    async def _run(self) -> None:
        version: int | None = None
        last_full = 0.0
        source = "poll"
        while True:
            try:
                v = await asyncio.to_thread(self.store.locks_version)
                now = time.monotonic()
                if v != version or now - last_full >= FULL:
                    if version is not None and v != version:
                        metrics.current().lock_wakeup(source)
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
            source = await self._sleep()

    async def _apply(self, active: list[Lock]) -> None:
        for c in list(self.svc.connections):
            if c.user is None or c.closing:
                continue
            lock = locks.matching(active, user=c.user.name, device_id=c.device_id)
            if lock is None:
                continue
            self.ended += 1
            delay = metrics.current().lock_enforced(lock.created_at)
            log.info("lock %s ends a session of %s (%.3f s after the lock)", lock.id,
                     c.user.name, delay, extra={"lock": lock.id, "user": c.user.name,
                                                "device_id": c.device_id, "delay": delay})
            await c.end(f"auditbox: locked: {locks.message(lock)}", f"lock:{lock.id}",
                        locked=lock.target_kind)
            with contextlib.suppress(Exception):
                await self.svc.audit("lock.enforced", "system", lock=lock.id, user=c.user.name,
                                     device_id=c.device_id,
                                     session=c.pty.id if c.pty else None)
