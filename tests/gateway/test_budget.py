"""The output budget: slowed, never dropped or reordered; daily total stops a session."""

from __future__ import annotations

import asyncio

from gateway.budget import DailyTotal, OutputBudget, TokenBucket, next_utc_midnight, utc_day


class Clock:
    def __init__(self, t: float = 1_767_225_600.0) -> None:   # 2026-01-01T00:00:00Z
        self.t = t

    def __call__(self) -> float:
        return self.t

    async def sleep(self, dt: float) -> None:
        self.t += dt


class Totals:
    """Store.add_output's contract: add to (user, day), return the total."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}

    def __call__(self, user: str, day: str, n: int) -> int:
        self.rows[(user, day)] = self.rows.get((user, day), 0) + n
        return self.rows[(user, day)]


def run(data: bytes, rate: int, burst: int, daily: int, clock: Clock,
        totals: Totals | None = None) -> tuple[bytes, bool, list[int], OutputBudget]:
    totals = totals or Totals()
    budget = OutputBudget(TokenBucket(rate, burst, clock), DailyTotal("alice", daily, totals,
                                                                      wall=clock),
                          sleep=clock.sleep)
    got: list[bytes] = []

    async def write(b: bytes) -> None:
        got.append(b)

    async def go() -> bool:
        ok = True
        for i in range(0, len(data), 32768):         # the relay's read size
            if not await budget.send(data[i:i + 32768], write):
                ok = False
                break
        await budget.close()
        return ok

    ok = asyncio.run(go())
    return b"".join(got), ok, [len(g) for g in got], budget


def test_slowed_never_dropped_or_reordered() -> None:
    clock = Clock()
    data = bytes(i % 251 for i in range(1024 * 1024))
    t0 = clock.t
    out, ok, sizes, budget = run(data, 8192, 262144, 64 * 2**20, clock)
    assert ok and out == data
    # the burst goes at once, the rest at the sustained rate: (1 MiB - 256 KiB) / 8 KiB/s
    assert abs((clock.t - t0) - 96.0) < 0.5
    # throttled output leaves in tenth-of-a-second slices, not in 4-second lumps
    assert max(sizes[10:]) <= 820
    assert budget.throttled_seconds > 90


def test_under_the_rate_no_delay() -> None:
    clock = Clock()
    t0 = clock.t
    out, ok, _, budget = run(b"x" * 200_000, 8192, 262144, 64 * 2**20, clock)
    assert ok and len(out) == 200_000 and clock.t == t0 and budget.throttled_seconds == 0


def test_daily_total_delivers_up_to_it_then_stops() -> None:
    clock = Clock()
    totals = Totals()
    totals("alice", utc_day(clock.t), 900_000)            # earlier sessions today
    out, ok, _, budget = run(b"y" * 300_000, 10**9, 10**9, 1_000_000, clock, totals)
    assert not ok and len(out) == 100_000
    assert totals.rows[("alice", utc_day(clock.t))] == 1_000_000
    assert budget.daily.used_share == 1.0


def test_daily_total_rolls_over_at_utc_midnight() -> None:
    clock = Clock(1_767_225_600.0 + 86400 - 1)
    totals = Totals()
    totals("alice", utc_day(clock.t), 999_999)
    daily = DailyTotal("alice", 1_000_000, totals, wall=clock)
    assert daily.remaining() == 1
    clock.t = next_utc_midnight(clock.t)
    assert daily.remaining() == 1_000_000
    daily.add(10)
    daily.flush()
    assert totals.rows[("alice", utc_day(clock.t))] == 10
