"""Single-use nonces that expire (30 s by default). The clock is injectable."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

NONCE_SIZE = 32
DEFAULT_TTL = 30.0


class NonceStore:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic,
                 max_outstanding: int = 1_000_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_outstanding = max_outstanding
        self._issued: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        while self._issued:
            nonce, t = next(iter(self._issued.items()))
            if now - t <= self.ttl and len(self._issued) <= self.max_outstanding:
                break
            del self._issued[nonce]

    def add(self, nonce: bytes) -> None:
        """Register a nonce issued elsewhere (e.g. by the admin CLI) as fresh now."""
        with self._lock:
            now = self.clock()
            self._issued[bytes(nonce)] = now
            self._issued.move_to_end(bytes(nonce))
            self._purge(now)

    def issue(self) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        self.add(nonce)
        return nonce

    def consume(self, nonce: bytes) -> str | None:
        """Use a nonce up. Returns None if it was fresh, else the reason it is not."""
        with self._lock:
            t = self._issued.pop(bytes(nonce), None)
            if t is None:
                return "nonce unknown or already used"
            if self.clock() - t > self.ttl:
                return "nonce expired"
            return None
