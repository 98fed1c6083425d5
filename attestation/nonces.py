"""Challenge nonces: fixed length, single use for the life of a store, short lived.

The verifier needs only ``consume``: any object with ``consume(nonce: bytes) -> str | None``
is a nonce store (``NonceConsumer``, a ``typing.Protocol``). ``consume`` returns None when
the nonce was issued by this store, is unexpired and was never used before, and marks it
used in the same step; otherwise it returns the reason in words (unknown, already used,
expired, wrong length) and the verifier refuses at ``qualifying_data``. The gateway plugs
in its database-backed store (one store for the whole fleet) with the same method.

``NonceStore`` is the in-process implementation (tests, ``auditbox attest verify``, a
single gateway process):

* every nonce is exactly ``NONCE_SIZE`` (32) bytes;
* ``issue()`` makes one from os.urandom; ``add(nonce)`` registers one made elsewhere;
* a nonce is good for ``ttl`` seconds (30 by default; the clock is injectable);
* a nonce is usable once, ever: ``consume`` of a used nonce fails, and ``add`` of a nonce
  this store has ever issued, added or seen used raises ``NonceReused``. The store
  therefore remembers every nonce it has handed out (about 100 bytes each, so a process
  that issues millions should use the database-backed store, which has the same rule).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from .errors import AttestationError

NONCE_SIZE = 32
DEFAULT_TTL = 30.0


class NonceConsumer(Protocol):
    """What the verifier needs from a nonce store."""

    def consume(self, nonce: bytes) -> str | None:
        """Use ``nonce`` up: None if it was fresh, else why it is not."""
        ...


class NonceReused(AttestationError):
    """``add`` of a nonce the store has already issued, added or seen used."""


class NonceStore:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic,
                 max_outstanding: int = 1_000_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_outstanding = max_outstanding
        self._issued: OrderedDict[bytes, float] = OrderedDict()
        self._retired: set[bytes] = set()     # used, expired or evicted: never good again
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        while self._issued:
            nonce, t = next(iter(self._issued.items()))
            if now - t <= self.ttl and len(self._issued) <= self.max_outstanding:
                break
            del self._issued[nonce]
            self._retired.add(nonce)

    def add(self, nonce: bytes) -> None:
        """Register a nonce issued elsewhere (e.g. by the admin CLI) as fresh now."""
        nonce = bytes(nonce)
        if len(nonce) != NONCE_SIZE:
            raise NonceReused(f"a nonce is {NONCE_SIZE} bytes, not {len(nonce)}")
        with self._lock:
            if nonce in self._issued or nonce in self._retired:
                raise NonceReused("this nonce was issued or used before")
            now = self.clock()
            self._issued[nonce] = now
            self._purge(now)

    def issue(self) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        self.add(nonce)
        return nonce

    def consume(self, nonce: bytes) -> str | None:
        """Use a nonce up. Returns None if it was fresh, else the reason it is not."""
        nonce = bytes(nonce)
        if len(nonce) != NONCE_SIZE:
            return f"nonce is {len(nonce)} bytes, not {NONCE_SIZE}"
        with self._lock:
            t = self._issued.pop(nonce, None)
            if t is None:
                return "nonce already used" if nonce in self._retired else "nonce unknown"
            self._retired.add(nonce)
            if self.clock() - t > self.ttl:
                return "nonce expired"
            return None
