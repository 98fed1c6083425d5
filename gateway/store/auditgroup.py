"""Group commit for the audit chain: concurrent appends of one process share a transaction.

The chain is one sequence fleet-wide, so every append takes the chain's lock (SQLite's
write lock, a PostgreSQL advisory lock) for the length of its transaction, commit
(fsync) included. One transaction per entry caps the whole fleet at one entry per
commit latency. Here, callers of one store that arrive while a transaction is being
written queue up; the first of them writes the queue (at most ``MAX_BATCH`` entries)
in the next transaction, and every caller returns only once its own entry is
committed, or raises the transaction's error (the gateway fails closed as before).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import AuditEntry

MAX_BATCH = 256


@dataclass
class Pending:
    at_us: int
    actor: str
    event: str
    text: str                       # the data as stored (sorted-key JSON)
    data: dict[str, Any]
    entry: AuditEntry | None = None
    error: BaseException | None = None
    done: bool = False


WriteBatch = Callable[[list[Pending]], None]


class AuditGroup:
    """One per store instance. ``write`` appends a batch in ONE transaction and sets
    ``entry`` on each item (in order: consecutive seqs)."""

    def __init__(self, write: WriteBatch) -> None:
        self.write = write
        self.cv = threading.Condition()
        self.queue: list[Pending] = []
        self.writing = False
        self.batches = 0

    def append(self, item: Pending) -> AuditEntry:
        with self.cv:
            self.queue.append(item)
        while True:
            with self.cv:
                while not item.done and self.writing:
                    self.cv.wait()
                if item.done:
                    return self._result(item)
                self.writing = True                # we write the oldest queued entries
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            error: BaseException | None = None
            try:
                self.write(batch)
            except BaseException as exc:           # every caller of the batch fails closed
                error = exc
            with self.cv:
                for p in batch:
                    p.error, p.done = error, True
                self.writing = False
                self.batches += 1
                self.cv.notify_all()

    @staticmethod
    def _result(item: Pending) -> AuditEntry:
        if item.error is not None:
            raise item.error
        assert item.entry is not None
        return item.entry
