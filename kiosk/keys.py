"""Decode what the console sends into key events for the kiosk's own screens.

Only the login, enrollment and message screens use this; in a session every byte goes
to the remote side unchanged. Escape sequences of the Linux console, VT100/VT220 and
xterm are recognised for the few keys the screens use; any other sequence is one
``Key("other")`` and does nothing.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# CSI: ESC [ params intermediates final; SS3: ESC O x; Linux console F1-F5: ESC [ [ A..E
_SEQUENCE = re.compile(rb"\x1b(\[\[[A-E]|\[[0-?]*[ -/]*[@-~]|O[ -~]|(?![\[O])[ -~])")
_PREFIX = re.compile(rb"\x1b(\[\[?|\[[0-?]+[ -/]*|O)?")
_NAMED = {
    b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down",
    b"\x1b[Z": "backtab",
    b"\x1bOQ": "f2", b"\x1b[12~": "f2", b"\x1b[[B": "f2",
    b"\x1b[3~": "delete",
}
_CONTROL = {
    b"\r": "enter", b"\n": "enter", b"\t": "tab", b"\x7f": "backspace", b"\x08": "backspace",
    b"\x15": "clear",        # Ctrl-U
    b"\x05": "f2",           # Ctrl-E: "enroll", for consoles without function keys
}


@dataclass(frozen=True)
class Key:
    name: str            # "char", "enter", "tab", "backspace", "escape", "f2", ..., "other"
    char: str = ""       # the character for name == "char"


class KeyDecoder:
    """Incremental: feed() any chunk; a sequence split across reads is kept for the next."""

    def __init__(self) -> None:
        self.pending = b""
        self.text = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes, final: bool = True) -> list[Key]:
        buf = self.pending + data
        self.pending = b""
        keys: list[Key] = []
        i = 0
        while i < len(buf):
            b = buf[i:i + 1]
            if b == b"\x1b":
                m = _SEQUENCE.match(buf, i)
                if m:
                    seq = m.group(0)
                    keys.append(Key(_NAMED.get(seq, "other")))
                    i = m.end()
                    continue
                if not final and _PREFIX.fullmatch(buf, i):
                    self.pending = buf[i:]    # a sequence cut by the read: wait for the rest
                    break
                keys.append(Key("escape"))
                i += 1
                continue
            if b in _CONTROL:
                keys.append(Key(_CONTROL[b]))
            elif b[0] < 0x20:
                keys.append(Key("other"))     # Ctrl-C, Ctrl-D, Ctrl-Z, Ctrl-\ ... do nothing
            else:
                for ch in self.text.decode(b):
                    if ch.isprintable():
                        keys.append(Key("char", ch))
            i += 1
        return keys


def count_keys(data: bytes) -> int:
    """Key presses in a chunk of console input (an escape sequence is one key)."""
    n = 0
    i = 0
    while i < len(data):
        if data[i] == 0x1b:
            m = _SEQUENCE.match(data, i)
            i = m.end() if m else i + 1
        elif 0x80 <= data[i] < 0xc0:      # UTF-8 continuation byte: same key
            i += 1
            continue
        else:
            i += 1
        n += 1
    return n
