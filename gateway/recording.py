"""Session recordings: asciicast v2 files written one flushed line per event.

File: a header line ``{"version": 2, "width": W, "height": H, "timestamp": T,
"env": {"TERM": ...}, "title": "<session id>"}``, then one JSON array per event:
``[seconds, "o", text]`` (output to the terminal), ``[seconds, "i", text]`` (input),
``[seconds, "r", "WxH"]`` (window change). Each line goes to the file in one
``write`` on an unbuffered descriptor, so a gateway killed at any moment leaves a file
whose every complete line is an event; the reader ignores a cut-off last line.

Bytes become text with ``surrogateescape``: valid UTF-8 reads as itself (any
asciicast player shows it), and a byte that is not valid UTF-8 is kept as a lone
surrogate escape, so ``output_bytes()`` gives back exactly the bytes the terminal
received. A UTF-8 sequence split across two reads is held until it completes.

Input (``recording.input`` in the config): ``keys`` records what was typed,
``timing`` records when and how many bytes (each byte as ``*``), ``off`` nothing.
The SHA-256 of the file's bytes is computed as it is written; ``close()`` returns it
for the audit log.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

INPUT_MODES = ("keys", "timing", "off")
MAX_LINE = 16 * 1024 * 1024


class RecordingError(Exception):
    """A recording file that is not asciicast v2 as this module writes it."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    timestamp: int
    term: str
    title: str


@dataclass(frozen=True)
class Event:
    at: float
    kind: str          # o | i | r
    data: str


class Recorder:
    """Writes one session's asciicast v2 file."""

    def __init__(self, path: Path, *, width: int, height: int, term: str, title: str,
                 input_mode: str = "keys", clock: Callable[[], float] = time.monotonic,
                 started: float | None = None) -> None:
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode: {input_mode!r} (allowed: {', '.join(INPUT_MODES)})")
        self.path = path
        self.input_mode = input_mode
        self._clock = clock
        self._t0 = clock()
        self._sha = hashlib.sha256()
        self._out = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._in = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.bytes_out = 0
        self.bytes_in = 0
        header = {"version": 2, "width": width, "height": height,
                  "timestamp": int(started if started is not None else time.time()),
                  "env": {"TERM": term}, "title": title}
        self._line(header)

    def _line(self, obj: object) -> None:
        if self._fd is None:
            raise RecordingError(f"{self.path}: recording already closed")
        line = (json.dumps(obj, ensure_ascii=True, separators=(", ", ": ")) + "\n").encode()
        self._sha.update(line)
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _elapsed(self) -> float:
        return round(max(0.0, self._clock() - self._t0), 6)

    def output(self, data: bytes) -> None:
        self.bytes_out += len(data)
        text = self._out.decode(data)
        if text:
            self._line([self._elapsed(), "o", text])

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.input_mode == "off":
            return
        text = self._in.decode(data) if self.input_mode == "keys" else "*" * len(data)
        if text:
            self._line([self._elapsed(), "i", text])

    def resize(self, width: int, height: int) -> None:
        self._line([self._elapsed(), "r", f"{width}x{height}"])

    def close(self) -> str:
        """Flush what a split UTF-8 sequence held back, fsync, close; return the
        file's SHA-256 (hex)."""
        if self._fd is None:
            return self._sha.hexdigest()
        tail = self._out.decode(b"", final=True)
        if tail:
            self._line([self._elapsed(), "o", tail])
        if self.input_mode == "keys":
            tail = self._in.decode(b"", final=True)
            if tail:
                self._line([self._elapsed(), "i", tail])
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return self._sha.hexdigest()


# -- reading ---------------------------------------------------------------------------
def _check_event(obj: object, lineno: int, path: Path) -> Event:
    if (not isinstance(obj, list) or len(obj) != 3 or isinstance(obj[0], bool)
            or not isinstance(obj[0], int | float) or obj[1] not in ("o", "i", "r")
            or not isinstance(obj[2], str)):
        raise RecordingError(f"{path}:{lineno}: not an asciicast v2 event")
    return Event(float(obj[0]), obj[1], obj[2])


def read(path: Path) -> tuple[Header, Iterator[Event]]:
    """Header and events. A last line without its newline (a crash mid-write) is
    ignored; anything else malformed is a RecordingError."""
    f = path.open("rb")
    first = f.readline(MAX_LINE)
    try:
        head = json.loads(first)
        if not first.endswith(b"\n") or not isinstance(head, dict) or head.get("version") != 2:
            raise ValueError
        header = Header(int(head["width"]), int(head["height"]), int(head["timestamp"]),
                        str(head.get("env", {}).get("TERM", "")), str(head.get("title", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        f.close()
        raise RecordingError(f"{path}:1: not an asciicast v2 header") from None

    def events() -> Iterator[Event]:
        with f:
            lineno = 1
            for raw in f:
                lineno += 1
                if not raw.endswith(b"\n"):
                    return          # cut short by a crash: playable up to here
                try:
                    obj = json.loads(raw)
                except ValueError:
                    raise RecordingError(f"{path}:{lineno}: not JSON") from None
                yield _check_event(obj, lineno, path)

    return header, events()


def output_bytes(path: Path) -> bytes:
    """Exactly the bytes the terminal received, from the recording."""
    _, events = read(path)
    return b"".join(e.data.encode("utf-8", "surrogateescape") for e in events if e.kind == "o")


def play(path: Path, out: BinaryIO, *, speed: float = 1.0, max_idle: float | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Replay the output events to ``out`` at ``speed`` (2.0 = twice as fast), waits
    between events capped at ``max_idle`` seconds; return the bytes written."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    _, events = read(path)
    last = 0.0
    total = 0
    for e in events:
        if e.kind != "o":
            continue
        wait = (e.at - last) / speed
        if max_idle is not None:
            wait = min(wait, max_idle)
        if wait > 0:
            sleep(wait)
        last = e.at
        data = e.data.encode("utf-8", "surrogateescape")
        out.write(data)
        out.flush()
        total += len(data)
    return total


def export(path: Path, out: BinaryIO) -> int:
    """Copy a recording to ``out`` after checking every line (a cut-off last line is
    left out, so the export is a well-formed asciicast v2 file); return bytes written."""
    _, events = read(path)
    n_events = sum(1 for _ in events)       # checks every line; raises on a bad one
    total = 0
    with path.open("rb") as f:
        for i, line in enumerate(f):
            if i > n_events:
                break
            out.write(line)
            total += len(line)
    out.flush()
    return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
