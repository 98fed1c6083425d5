"""Remote locks, store side: add, remove, match, and the message a locked terminal sees.

A lock names a device or a user, carries the admin's reason, and may expire (TTL).
Every add or remove bumps ``Store.locks_version()``, which every replica polls; the
watcher that ends live sessions is the server's (gateway/live.py, G2).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from .audit import Auditor
from .store.base import Lock, Store

KINDS = ("device", "user")
DEFAULT_REASON = "locked by an administrator"
MAX_REASON = 500
_REASON = re.compile(r"[^\x00-\x1f\x7f]*")


def check_reason(reason: str) -> str | None:
    if len(reason) > MAX_REASON:
        return f"longer than {MAX_REASON} characters"
    if not _REASON.fullmatch(reason):
        return "control characters or newlines are not allowed"
    return None


def add_lock(store: Store, auditor: Auditor, kind: str, target: str, reason: str, by: str,
             ttl: float | None = None, now: float | None = None) -> int:
    if kind not in KINDS:
        raise ValueError(f"lock kind must be one of {KINDS}")
    now = time.time() if now is None else now
    expires = now + ttl if ttl is not None else None
    lock_id = store.add_lock(Lock(kind, target, reason or DEFAULT_REASON, now, by, expires))
    auditor.log("lock.add", actor=by, id=lock_id, kind=kind, target=target,
                reason=reason or DEFAULT_REASON, expires_at=expires)
    return lock_id


def remove_lock(store: Store, auditor: Auditor, lock_id: int, by: str,
                now: float | None = None) -> bool:
    now = time.time() if now is None else now
    done = store.remove_lock(lock_id, by, now)
    if done:
        auditor.log("lock.remove", actor=by, id=lock_id)
    return done


def matching(locks: Iterable[Lock], user: str | None = None,
             device_id: str | None = None) -> Lock | None:
    """The oldest lock that applies to this user or device, else None."""
    for lock in sorted(locks, key=lambda x: x.id or 0):
        if (lock.target_kind == "user" and user is not None and lock.target == user) or (
                lock.target_kind == "device" and device_id is not None
                and lock.target == device_id):
            return lock
    return None


def message(lock: Lock) -> str:
    """What the terminal shows: the admin's reason, and until when if the lock expires."""
    text = lock.reason or DEFAULT_REASON
    if lock.expires_at is not None:
        text += time.strftime(" (until %Y-%m-%d %H:%M UTC)", time.gmtime(lock.expires_at))
    return text
