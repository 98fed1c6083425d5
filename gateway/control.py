"""The gateway's end of the control channel (docs/protocol.md section 3).

The wire format (framing, message schemas) is ``kiosk.protocol``, shared with the
terminal. This module is the channel as the gateway runs it: an asyncssh session
object for the ``auditbox-control@auditbox`` subsystem that splits frames with a
limit set per state (``expect_large``: 1 MiB while evidence or an enrollment request
is due, 64 KiB otherwise), validates every message, and hands them to ``recv`` in
order. ``alert`` messages, allowed any time after ``accepted``, go to a callback.
Anything else that arrives unasked, or any violation, is a ``ControlError`` with
step ``protocol``: the caller sends ``refused`` and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncssh

from kiosk import protocol
from kiosk.protocol import CLIENT_MESSAGES, GATEWAY_MESSAGES, FrameReader, ProtocolError


class ControlError(Exception):
    """The exchange cannot go on; ``step`` and ``message`` go into ``refused``."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class ControlChannel(asyncssh.SSHServerSession[bytes]):
    def __init__(self, large_limit: int) -> None:
        self.large_limit = large_limit
        self._reader = FrameReader(protocol.SMALL_LIMIT)
        self._queue: asyncio.Queue[dict[str, Any] | ControlError | None] = asyncio.Queue()
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.accepted = False
        self.on_alert: Callable[[str, str], None] = lambda kind, detail: None
        self.closed = asyncio.Event()

    # -- asyncssh callbacks --------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: int | None) -> None:
        try:
            for body in self._reader.feed(data):
                msg = protocol.parse(body, CLIENT_MESSAGES)
                if msg["type"] == "alert":
                    if not self.accepted:
                        raise ProtocolError("alert before the terminal was accepted")
                    self.on_alert(msg["kind"], msg["detail"])
                    continue
                self._queue.put_nowait(msg)
        except ProtocolError as exc:
            self._reader.limit = 0
            self._queue.put_nowait(ControlError("protocol", str(exc)))

    def eof_received(self) -> bool:
        self._queue.put_nowait(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(None)
        self.closed.set()

    # -- the gateway's side ----------------------------------------------------------------
    def expect_large(self, large: bool) -> None:
        if self._reader.limit:
            self._reader.limit = self.large_limit if large else protocol.SMALL_LIMIT

    async def recv(self, *types: str, timeout: float, what: str) -> dict[str, Any]:
        """The next message, which must be one of ``types``, within ``timeout`` s."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise ControlError("timeout", f"no {what} within {timeout:g} s") from None
        if item is None:
            raise ControlError("protocol", f"control channel closed while waiting for {what}")
        if isinstance(item, ControlError):
            raise item
        if item["type"] not in types:
            raise ControlError("protocol", f"expected {' or '.join(types)}, got {item['type']}")
        return item

    def send(self, msg: dict[str, Any]) -> None:
        if self._chan is None:
            return
        frame = protocol.encode(msg, GATEWAY_MESSAGES)
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self._chan.write(frame)

    def refuse(self, step: str, message: str) -> None:
        self.send({"type": "refused", "step": step, "message": message[:2000]})

    def close(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self._chan.close()
