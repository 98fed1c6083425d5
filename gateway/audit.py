"""The audit log: a hash chain in the store, a copy in the systemd journal.

Entry hash = SHA256 of the canonical JSON (``attestation.canonical.dumps``) of
``{"seq", "at" (int microseconds), "actor", "event", "data", "prev_hash"}``; the first
entry's prev_hash is 64 zeros. ``verify`` walks the chain and names the first entry that
was edited, dropped or reordered. What a chain cannot show by itself: the newest
entries cut off, or the last one rewritten with a recomputed hash. The journal copy
(and ``audit tail`` output kept elsewhere) covers those.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation import canonical

from .store.base import AuditEntry, Store

ZERO_HASH = "0" * 64
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "auditbox-gateway"
EVENT_NAME = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*")
MAX_JOURNAL_DATA = 48 * 1024
# events that also go to the journal as warnings (priority 4) rather than info (6)
WARNING_EVENTS = ("login.failed", "login.lockout", "login.rate-limited", "login.break-glass",
                  "attest.refused", "channel.refused", "lock.add", "alert", "enroll.refused",
                  "session.locked")


def entry_hash(seq: int, at_us: int, actor: str, event: str, data: dict[str, Any],
               prev_hash: str) -> str:
    body = canonical.dumps({"seq": seq, "at": at_us, "actor": actor, "event": event,
                            "data": data, "prev_hash": prev_hash})
    return hashlib.sha256(body).hexdigest()


def hash_of(e: AuditEntry, seq: int | None = None) -> str:
    return entry_hash(e.seq if seq is None else seq, e.at_us, e.actor, e.event, e.data,
                      e.prev_hash)


def check_data(data: dict[str, Any]) -> dict[str, Any]:
    """Audit data must be JSON: str, int, finite float, bool, None, lists and str-keyed
    dicts of those. Refused here, at the writer, rather than found unverifiable later."""
    try:
        text = json.dumps(data, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"audit data is not plain JSON: {exc}") from None
    out: dict[str, Any] = json.loads(text)
    return out


# -- verification --------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int                    # entries checked
    last_hash: str                # hash of the last good entry (ZERO_HASH if none)
    kind: str | None = None       # edited | dropped | reordered
    seq: int | None = None        # the entry named
    message: str = ""


def _original_seq(e: AuditEntry, lo: int, hi: int) -> int | None:
    """The seq this entry's content was hashed with (searched near its own), or None if
    its content no longer matches its hash under any seq in [lo, hi]."""
    if hash_of(e) == e.hash:
        return e.seq
    for delta in range(1, hi - lo + 1):
        for s in (e.seq + delta, e.seq - delta):
            if lo <= s <= hi and hash_of(e, s) == e.hash:
                return s
    return None


def _describe(e: AuditEntry) -> str:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at_us / 1e6))
    return f"seq {e.seq} ({e.event} by {e.actor} at {at})"


def _classify(entries: list[AuditEntry], i: int) -> tuple[str, int, str]:
    e = entries[i]
    prev = entries[i - 1] if i else None
    expected = prev.seq + 1 if prev else 1
    top = max(x.seq for x in entries) + len(entries) + 1
    origs = {j: _original_seq(x, 1, top) for j, x in enumerate(entries) if j >= i}
    if hash_of(e) != e.hash:
        orig = origs[i]
        if orig is None:
            return "edited", e.seq, f"entry {_describe(e)} was edited: its content no longer " \
                                    "matches its hash"
        owner = next((entries[j].seq for j, o in origs.items() if o == e.seq), None)
        if owner is not None or orig < e.seq:
            return "reordered", e.seq, (f"entries reordered: the entry stored as seq {e.seq} "
                                        f"was written as seq {orig}")
        return "dropped", e.seq, (f"entry seq {e.seq} was dropped: the entry now numbered "
                                  f"{e.seq} was written as seq {orig} (later entries "
                                  "renumbered)")
    if e.seq > expected:
        later = [entries[j].seq for j, o in origs.items() if o is not None and o < e.seq
                 and o >= expected and j > i]
        if later:
            return "reordered", expected, (f"entries reordered: seq {expected} comes after "
                                           f"seq {e.seq}")
        gap = f"seq {expected}" if e.seq == expected + 1 else f"seq {expected}..{e.seq - 1}"
        return "dropped", expected, f"entry {gap} dropped (seq jumps from {expected - 1} " \
                                    f"to {e.seq})"
    if e.seq < expected:
        return "reordered", e.seq, f"entries reordered: seq {e.seq} comes after seq " \
                                   f"{expected - 1}"
    if prev is None:
        return "dropped", 1, ("the first entry's prev_hash is not zero: the entries before "
                              f"{_describe(e)} were dropped")
    return "edited", prev.seq, (f"entry {_describe(prev)} was edited (its hash was "
                                f"recomputed; seq {e.seq} still records the original)")


def verify(entries: Iterable[AuditEntry]) -> VerifyResult:
    """Check the whole chain from seq 1; name the first edited, dropped or reordered entry."""
    items = list(entries)
    prev: AuditEntry | None = None
    for i, e in enumerate(items):
        expected_seq = prev.seq + 1 if prev else 1
        expected_prev = prev.hash if prev else ZERO_HASH
        if hash_of(e) != e.hash or e.seq != expected_seq or e.prev_hash != expected_prev:
            kind, seq, message = _classify(items, i)
            return VerifyResult(False, i, prev.hash if prev else ZERO_HASH, kind, seq, message)
        prev = e
    last = prev.hash if prev else ZERO_HASH
    return VerifyResult(True, len(items), last, message=f"ok: {len(items)} entries, "
                                                        f"last hash {last}")


# -- the journal -------------------------------------------------------------------------

def _journal_field(name: str, value: str) -> bytes:
    raw = value.encode("utf-8", "replace")
    if b"\n" in raw:
        return name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
    return name.encode() + b"=" + raw + b"\n"


def journal_message(e: AuditEntry) -> bytes:
    """The native journal protocol datagram for one entry."""
    data = json.dumps(e.data, sort_keys=True, separators=(",", ":"))
    if len(data) > MAX_JOURNAL_DATA:
        data = data[:MAX_JOURNAL_DATA] + "...(truncated)"
    priority = "4" if e.event.startswith(WARNING_EVENTS) else "6"
    fields = [("MESSAGE", f"{e.event} by {e.actor}: {data}"), ("PRIORITY", priority),
              ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER), ("AUDITBOX_SEQ", str(e.seq)),
              ("AUDITBOX_EVENT", e.event), ("AUDITBOX_ACTOR", e.actor),
              ("AUDITBOX_DATA", data), ("AUDITBOX_HASH", e.hash),
              ("AUDITBOX_PREV_HASH", e.prev_hash)]
    return b"".join(_journal_field(k, v) for k, v in fields)


class JournalSink:
    """Sends entries to journald's native socket; does nothing where there is none."""

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, e: AuditEntry) -> bool:
        if not self.path.exists():
            return False
        msg = journal_message(e)
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(msg, str(self.path))
                self.sent += 1
                return True
            except OSError:
                self.failed += 1
                return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# -- the writer ---------------------------------------------------------------------------

def default_actor() -> str:
    try:
        import pwd
        name = pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        name = str(os.getuid())
    return f"cli:{name}"


class Auditor:
    """Appends to the chain (fails closed: StoreError propagates) and copies to the journal."""

    def __init__(self, store: Store, actor: str, journal: JournalSink | None = None) -> None:
        self.store = store
        self.actor = actor
        self.journal = journal

    def log(self, event: str, actor: str | None = None, **data: Any) -> AuditEntry:
        if not EVENT_NAME.fullmatch(event):
            raise ValueError(f"bad audit event name {event!r}")
        entry = self.store.append_audit(time.time(), actor or self.actor, event,
                                        check_data(data))
        if self.journal is not None:
            self.journal.send(entry)
        return entry

    def verify(self) -> VerifyResult:
        return verify(self.store.audit_entries())
