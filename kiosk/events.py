"""Events from background threads (workers, the gateway link's control thread, the
reachability probe) to the kiosk's main loop, which alone touches the screen."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

from .tty import Waker


@dataclass(frozen=True)
class Event:
    kind: str                 # see the handlers in app.py
    data: dict[str, Any]
    attempt: int = 0          # which worker posted it (stale results are dropped)


class Events:
    def __init__(self, waker: Waker) -> None:
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.waker = waker

    def post(self, kind: str, attempt: int = 0, **data: Any) -> None:
        self.queue.put(Event(kind, data, attempt))
        self.waker.wake()

    def drain(self) -> list[Event]:
        self.waker.drain()
        out: list[Event] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out
