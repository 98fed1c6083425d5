"""The registry of this process's live sessions, for the lock watcher and the web console.

A ``LiveSession`` is registered when a PTY session starts and removed when it ends. It
carries what the console shows (user, device, source, start, byte counts, budget
use, anomaly score) and two operations:

- ``await session.end(message, reason, locked=None)``: end it now, showing
  ``message`` on the terminal (and sending ``locked`` on the control channel when
  ``locked`` names the lock's target kind);
- ``session.subscribe()``: an async iterator of the output chunks the terminal gets
  from now on (a slow subscriber loses its oldest chunks, never slows the session;
  a gap is marked with ``LiveSession.GAP``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

EndFn = Callable[[str, str, "str | None"], Awaitable[None]]


@dataclass
class LiveSession:
    id: str
    user: str
    device_id: str | None
    source: str
    started_at: float
    break_glass: bool
    _end: EndFn
    bytes_in: int = 0
    bytes_out: int = 0
    budget_used: float = 0.0
    anomaly_score: float = 0.0
    ended: bool = False
    _subscribers: list[asyncio.Queue[bytes | None]] = field(default_factory=list)

    GAP = b"\r\n[auditbox: live view skipped output]\r\n"
    QUEUE = 256

    async def end(self, message: str, reason: str, locked: str | None = None) -> None:
        if not self.ended:
            self.ended = True
            await self._end(message, reason, locked)

    def publish(self, data: bytes) -> None:
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                    q.get_nowait()
                q.put_nowait(self.GAP)
            q.put_nowait(data)

    def close_subscribers(self) -> None:
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(None)

    async def subscribe(self) -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(self.QUEUE)
        self._subscribers.append(q)
        try:
            while True:
                item = await q.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.remove(q)


class Registry:
    def __init__(self) -> None:
        self._sessions: dict[str, LiveSession] = {}

    def add(self, s: LiveSession) -> None:
        self._sessions[s.id] = s

    def remove(self, session_id: str) -> None:
        s = self._sessions.pop(session_id, None)
        if s is not None:
            s.close_subscribers()

    def get(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[LiveSession]:
        return sorted(self._sessions.values(), key=lambda s: s.started_at)

    def matching(self, kind: str, target: str) -> list[LiveSession]:
        return [s for s in self._sessions.values()
                if (kind == "user" and s.user == target)
                or (kind == "device" and s.device_id == target)]

    def __len__(self) -> int:
        return len(self._sessions)
