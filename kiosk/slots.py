"""A value one thread waits for and another provides (a password still being typed)."""

from __future__ import annotations

import threading


class Cancelled(Exception):
    pass


class Slot:
    def __init__(self) -> None:
        self._value: str | None = None
        self._cancelled = False
        self._cond = threading.Condition()

    def set(self, value: str) -> None:
        with self._cond:
            self._value = value
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> str:
        """Block until set (returns the value, once) or cancelled (raises Cancelled)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._value is not None or self._cancelled,
                                     timeout)
            if self._cancelled or not ok or self._value is None:
                raise Cancelled()
            value, self._value = self._value, None
            return value

    @property
    def filled(self) -> bool:
        with self._cond:
            return self._value is not None
