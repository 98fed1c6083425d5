"""The human-bandwidth output budget: data-loss prevention on a session's output.

Everything the harness sends to the terminal passes through ``OutputBudget.send``:

- a token bucket (``rate`` bytes per second sustained, ``burst`` bytes at once):
  past it the output is *slowed*: ``send`` waits, the relay stops reading the
  upstream meanwhile, SSH flow control pushes back to the harness. Nothing is
  dropped or reordered; output leaves in slices of about a tenth of a second so a
  throttled screen still scrolls smoothly.
- a daily total per user (UTC day, summed in the store across sessions and
  replicas): the bytes up to the total are delivered, then ``send`` returns False
  and the caller locks the session with ``DAILY_MESSAGE``.

Defaults (``budget`` in gateway.yaml; see docs/admin-guide.md "Output budget"):
``rate: 8KiB`` (per second), ``burst: 256KiB``, ``daily: 64MiB``. An 80x24 screen
is 1,920 characters, about 2 KB, 3-6 KB with colour escapes: 8 KiB/s repaints a
full screen several times a second (an editor, ``top``, ``less``), far above what a
person reads (about 25 bytes/s of prose). The 256 KiB burst lets a ``cat`` of a
long file or a build log scroll past at full speed for 100+ screens before slowing.
A working day of real terminal use measures in single megabytes (the bench's
human session is ~20 KB a minute); 64 MiB is ten times a heavy day and 1/16 of a
GiB. At the defaults 1 GiB takes 36 hours at the sustained rate alone, and the
daily total stops it after 64 MiB (16 working days for 1 GiB).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

DEFAULT_RATE = 8 * 1024
DEFAULT_BURST = 256 * 1024
DEFAULT_DAILY = 64 * 1024 * 1024
DAILY_MESSAGE = ("auditbox: this account has reached its daily output budget; the session "
                 "is locked until 00:00 UTC")
SLICE_SECONDS = 0.1
FLUSH_SECONDS = 1.0


@dataclass
class TokenBucket:
    """``rate`` tokens (bytes) per second up to ``burst``; starts full."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.tokens = float(self.burst)
        self.last = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait_for(self, n: int) -> float:
        """Seconds until ``n`` bytes may go (0 = now). n must not exceed the burst."""
        self._refill()
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def take(self, n: int) -> None:
        self._refill()
        self.tokens -= n

    def slice_size(self) -> int:
        """How much to send at once while throttled: a tenth of a second's worth."""
        return max(1, min(int(self.burst), int(self.rate * SLICE_SECONDS)))


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def next_utc_midnight(at: float) -> float:
    return (int(at) // 86400 + 1) * 86400.0


class DailyTotal:
    """The user's output today, summed in the store (``Store.add_output``), batched
    so that the store sees about one write per second per session."""

    def __init__(self, user: str, daily: int, add_output: Callable[[str, str, int], int],
                 wall: Callable[[], float] = time.time) -> None:
        self.user = user
        self.daily = daily
        self._add = add_output
        self._wall = wall
        self.day = utc_day(wall())
        self.known = add_output(user, self.day, 0)     # today's total so far
        self.pending = 0
        self.writing = 0                    # taken from pending, not yet in the store
        self._carry: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def _roll(self) -> None:
        day = utc_day(self._wall())
        if day != self.day:                 # midnight UTC: a new total starts
            self._carry.append((self.day, self.pending))
            self.day, self.known, self.pending = day, 0, 0

    def remaining(self) -> int:
        with self._lock:
            self._roll()
            return max(0, self.daily - self.known - self.pending - self.writing)

    def add(self, n: int) -> None:
        with self._lock:
            self._roll()
            self.pending += n

    def flush(self) -> int:
        """Write the pending bytes (blocking: call through asyncio.to_thread; the event
        loop may add() meanwhile)."""
        with self._lock:
            self._roll()
            carry, self._carry = self._carry, []
            day, n, self.pending = self.day, self.pending, 0
            self.writing += n
        try:
            for cday, cn in carry:
                self._add(self.user, cday, cn)
            total = self._add(self.user, day, n)
        except BaseException:
            with self._lock:                # not written: count it as pending again
                self.pending += n
                self.writing -= n
            raise
        with self._lock:
            self.writing -= n
            if day == self.day:
                self.known = total
        return total

    @property
    def used_share(self) -> float:
        return min(1.0, (self.known + self.pending + self.writing) / self.daily)


class OutputBudget:
    """One session's output path: bucket, then daily total, then ``write``."""

    def __init__(self, bucket: TokenBucket, daily: DailyTotal, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_throttle: Callable[[float], None] | None = None) -> None:
        self.bucket = bucket
        self.daily = daily
        self._sleep = sleep
        self._on_throttle = on_throttle
        self._last_flush = bucket.clock()
        self._flushing: asyncio.Task[None] | None = None
        self.flush_error: Exception | None = None
        self.throttled_seconds = 0.0

    async def send(self, data: bytes, write: Callable[[bytes], Awaitable[None]]) -> bool:
        """Deliver ``data`` in order, slowed to the bucket; False once the daily total
        is reached (what fit under the total was delivered)."""
        view = memoryview(data)
        while view:
            allowed = self.daily.remaining()
            if allowed <= 0:
                await self._flush()
                return False
            n = min(len(view), allowed, int(self.bucket.burst))
            wait = self.bucket.wait_for(n)
            if wait > 0:
                n = min(n, self.bucket.slice_size())
                wait = self.bucket.wait_for(n)
                if self._on_throttle is not None:
                    self._on_throttle(wait)
                self.throttled_seconds += wait
                await self._sleep(wait)
            self.bucket.take(n)
            self.daily.add(n)
            await write(bytes(view[:n]))
            view = view[n:]
            if self.bucket.clock() - self._last_flush >= FLUSH_SECONDS:
                self._flush_soon()
        if self.daily.remaining() <= 0:
            await self._flush()
            return self.daily.remaining() > 0
        return True

    def _flush_soon(self) -> None:
        """Write the daily total in the background: the output path never waits on the
        store (the total held here already counts what is pending)."""
        self._last_flush = self.bucket.clock()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await asyncio.to_thread(self.daily.flush)
        except Exception as exc:  # the next flush retries; the session's end reports it
            self.flush_error = exc

    async def _flush(self) -> None:
        self._last_flush = self.bucket.clock()
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await asyncio.to_thread(self.daily.flush)

    async def close(self) -> None:
        await self._flush()
