"""The read-only live view (a WebSocket) and recording downloads.

``/sessions/{id}/live``: after the guard's checks (log-in cookie, a role that may
view, the browser's Origin equal to this origin: a WebSocket is not covered by the
same-origin policy), the server sends the tail of the session's recording so far (its
last 64 KiB of output, from the file the recorder flushes per event), then every
chunk the terminal gets, as binary frames, until the session ends; then a text frame
``{"type": "end", "reason": ...}`` and close. The view is read only: a frame from the
browser closes the socket (1008). A slow browser loses its oldest chunks (the
registry's rule; a gap is marked in the stream), never slows the session. Watching is
written to the audit log (``web.watch``).

``/sessions/{id}/cast``: the recording as asciicast v2 (``recording.export``: every
line checked, a line cut short by a crash left out) for the in-page player.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import recording
from ..live import LiveSession
from ..store.base import StoreError
from .console import Console
from .guard import Refused, console_of, current_login, same_origin
from .logins import VIEW, WebLogin

TAIL_BYTES = 64 * 1024
READ_BACK = 256 * 1024
OUT_QUEUE = 512
ALIVE_CHECK = 5.0


def recording_path(c: Console, rel: str) -> Path:
    """The recording file of a session row, refused if it would leave the directory."""
    base = c.cfg.recordings.resolve()
    path = (base / rel).resolve()
    if base not in path.parents:
        raise Refused(404, "no such recording")
    return path


def output_tail(path: Path, limit: int = TAIL_BYTES) -> bytes:
    """The last ``limit`` bytes of output in an asciicast file (read from its end)."""
    try:
        with path.open("rb") as f:
            f.seek(0, io.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - READ_BACK))
            data = f.read()
    except OSError:
        return b""
    lines = data.split(b"\n")
    if size > READ_BACK:
        lines = lines[1:]                 # the first line is cut
    out = bytearray()
    for line in lines[:-1]:               # the last is empty or cut short
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, list) and len(event) == 3 and event[1] == "o" \
                and isinstance(event[2], str):
            out += event[2].encode("utf-8", "surrogateescape")
    return bytes(out[-limit:])


# -- the live view ----------------------------------------------------------------------------

async def live(ws: WebSocket) -> None:
    c = console_of(ws)
    sid = ws.path_params["session_id"]
    try:
        login = await run_in_threadpool(current_login, c, ws)
        row = await run_in_threadpool(c.store.get_session, sid)
    except StoreError:
        await ws.close(code=1011)
        return
    if login is None or not login.may(VIEW) or not same_origin(ws):
        await ws.close(code=1008)          # before accept: the browser sees HTTP 403
        return
    await ws.accept()
    session = c.registry.get(sid)
    if row is None or session is None or session.ended:
        await ws.send_text(json.dumps({"type": "end", "reason": "not live on this replica"}))
        await ws.close()
        return
    await asyncio.to_thread(c.auditor.log, "web.watch", login.actor, session=sid,
                            user=session.user, device_id=session.device_id)
    await _stream(c, ws, login, session, recording_path(c, row.recording))


async def _stream(c: Console, ws: WebSocket, login: WebLogin, session: LiveSession,
                  path: Path) -> None:
    out: asyncio.Queue[bytes | None] = asyncio.Queue(OUT_QUEUE)

    async def collect() -> None:
        # no await between reading the file and subscribing: nothing is lost or doubled
        out.put_nowait(output_tail(path))
        async for chunk in session.subscribe():
            if out.full():                # drop the oldest two, mark the gap
                with contextlib.suppress(asyncio.QueueEmpty):
                    out.get_nowait()
                    out.get_nowait()
                out.put_nowait(LiveSession.GAP)
            out.put_nowait(chunk)
        await out.put(None)

    async def send() -> None:
        while (chunk := await out.get()) is not None:
            if chunk:
                await ws.send_bytes(chunk)

    async def read_only() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            await ws.receive_bytes()
            await ws.close(code=1008)     # the live view does not take input

    async def still_logged_in() -> None:
        while c.logins.alive(login):
            await asyncio.sleep(ALIVE_CHECK)

    tasks = [asyncio.create_task(t()) for t in (collect, send, read_only, still_logged_in)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done:                           # the session ended: drain, then say so
            await asyncio.wait_for(tasks[1], 5)
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": "end", "reason": "session ended"}))
                await ws.close()
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await ws.close()


# -- recordings -------------------------------------------------------------------------------

def cast(c: Console, request: Request, login: WebLogin, form: dict[str, str]) -> Response:
    sid = request.path_params["session_id"]
    row = c.store.get_session(sid)
    if row is None:
        raise Refused(404, f"no session {sid!r}")
    path = recording_path(c, row.recording)
    if not path.is_file():
        raise Refused(404, "the recording file is missing")
    buf = io.BytesIO()
    try:
        recording.export(path, buf)
    except recording.RecordingError as exc:
        raise Refused(500, f"the recording is damaged: {exc}") from None
    c.auditor.log("web.play", actor=login.actor, session=sid)
    return Response(buf.getvalue(), media_type="application/x-asciicast",
                    headers={"content-disposition": f'inline; filename="{sid}.cast"'})
