"""Draw full-screen text frames on the console, sending only the lines that changed.

A Frame is exactly ``rows`` lines of at most ``cols`` characters (plain text; a style
per line) and where the cursor goes. The first frame after a size change or
``invalidate()`` clears the screen; later ones rewrite changed lines only, so typing
into a field sends a few bytes, not a screen (it matters on a 115200 baud serial line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

STYLES = {"": "", "bold": "\x1b[1m", "reverse": "\x1b[7m", "dim": "\x1b[2m",
          "error": "\x1b[1;7m"}


@dataclass(frozen=True)
class Line:
    text: str = ""
    style: str = ""


@dataclass
class Frame:
    cols: int
    rows: int
    lines: list[Line] = field(default_factory=list)
    cursor: tuple[int, int] | None = None      # (row, col), 0-based

    def put(self, row: int, text: str, style: str = "") -> None:
        while len(self.lines) < self.rows:
            self.lines.append(Line())
        if 0 <= row < self.rows:
            self.lines[row] = Line(clip(text, self.cols), style)

    def padded(self) -> list[Line]:
        return (self.lines + [Line()] * self.rows)[: self.rows]


def clip(text: str, width: int) -> str:
    """Printable characters only, at most ``width`` of them (no control bytes ever)."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean[:width]


class Renderer:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.prev: list[Line] | None = None
        self.size: tuple[int, int] | None = None

    def invalidate(self) -> None:
        self.prev = None

    def draw(self, frame: Frame) -> None:
        lines = frame.padded()
        out = ["\x1b[?25l"]
        if self.prev is None or self.size != (frame.cols, frame.rows):
            # reset attributes, wrap mode on, whole screen cleared
            out.append("\x1b[0m\x1b[?7h\x1b[H\x1b[2J")
            self.prev = [Line()] * frame.rows
            self.size = (frame.cols, frame.rows)
        for row, (old, new) in enumerate(zip(self.prev, lines, strict=True)):
            if old != new:
                text = new.text[: frame.cols - (1 if row == frame.rows - 1 else 0)]
                out.append(f"\x1b[{row + 1};1H{STYLES.get(new.style, '')}{text}\x1b[0m\x1b[K")
        self.prev = lines
        if frame.cursor is not None:
            r, c = frame.cursor
            out.append(f"\x1b[{r + 1};{c + 1}H\x1b[?25h")
        self.write("".join(out).encode("utf-8"))
