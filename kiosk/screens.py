"""The kiosk's screens as frames: pure functions of what to show and the console size.

Every screen fits 80x24 and grows with the console: the content column is at most
100 characters wide and centred; the legal notice is re-wrapped to the column and cut
(with an ellipsis) only if the console is too short for all of it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from .render import Frame

MAX_WIDTH = 100
HIDDEN_NOTE = "(hidden)"


@dataclass
class Status:
    device_id: str = "..."
    mode: str = "..."
    enrollment: str = "..."
    gateway: str = "..."
    clock: str = ""


@dataclass
class Field:
    label: str
    value: str = ""
    secret: bool = False      # never echoed; not even its length is shown

    def shown(self) -> str:
        if self.secret:
            return HIDDEN_NOTE if self.value else ""
        return self.value


@dataclass
class LoginView:
    banner: str
    notice: str
    status: Status
    fields: list[Field]
    focus: int = 0
    message: str = ""
    message_style: str = ""          # "" | "error" | "bold"
    help: str = "Enter: next field    F2 or Ctrl-E: enroll this terminal (administrator)"


@dataclass
class MessageView:
    title: str
    body: str
    footer: str = "Press Enter to continue."
    style: str = "bold"
    status: Status | None = None
    fields: list[Field] = field(default_factory=list)
    focus: int = 0


def wrap_paragraphs(text: str, width: int) -> list[str]:
    """Re-wrap text to width, keeping blank-line paragraph breaks."""
    out: list[str] = []
    for para in text.strip().split("\n\n"):
        words = " ".join(line.strip() for line in para.splitlines()).strip()
        if out:
            out.append("")
        out.extend(textwrap.wrap(words, width, break_on_hyphens=False) or [""])
    return out


class _Column:
    """Lines of a centred content column; placed into a frame at the end."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.width = min(cols, MAX_WIDTH) - 2
        self.left = (cols - self.width) // 2
        self.lines: list[tuple[str, str]] = []
        self.cursor: tuple[int, int] | None = None

    def add(self, text: str = "", style: str = "") -> None:
        self.lines.append((text[: self.width], style))

    def center(self, text: str, style: str = "") -> None:
        self.add(text[: self.width].center(self.width).rstrip(), style)

    def rule(self) -> None:
        self.add("-" * self.width, "dim")

    def field(self, f: Field, label_width: int, focused: bool) -> None:
        label = f"{f.label}:".ljust(label_width + 1)
        value = f.shown()
        room = self.width - len(label) - 3
        shown = value[-room:] if len(value) > room else value
        self.add(f"{'>' if focused else ' '} {label} {shown}", "bold" if focused else "")
        if focused:
            self.cursor = (len(self.lines) - 1, 2 + len(label) + 1 + len(shown))

    def frame(self, footer: list[tuple[str, str]]) -> Frame:
        fr = Frame(self.cols, self.rows)
        body_rows = self.rows - len(footer)
        top = max(0, (body_rows - len(self.lines)) // 2) if len(self.lines) < body_rows else 0
        for i, (text, style) in enumerate(self.lines[:body_rows]):
            fr.put(top + i, " " * self.left + text, style)
        for i, (text, style) in enumerate(footer):
            fr.put(body_rows + i, " " * self.left + text[: self.width], style)
        if self.cursor is not None:
            r, c = self.cursor
            fr.cursor = (top + r, self.left + c)
        fr.lines = fr.padded()
        return fr


def _status_lines(col: _Column, st: Status) -> None:
    col.add(f"Terminal    {st.device_id}   ({st.mode} attestation)")
    col.add(f"Enrollment  {st.enrollment}")
    col.add(f"Gateway     {st.gateway}")
    col.add(f"Time        {st.clock}")


def _header(col: _Column, banner: str, notice: str, notice_rows: int) -> None:
    for line in banner.splitlines()[:3]:
        col.center(line.strip(), "bold")
    col.rule()
    wrapped = wrap_paragraphs(notice, col.width) if notice.strip() else []
    if len(wrapped) > notice_rows:
        wrapped = wrapped[: max(notice_rows, 1)]
        wrapped[-1] = wrapped[-1][: col.width - 3] + "..."
    for line in wrapped:
        col.add(line)
    if wrapped:
        col.rule()


def _fields(col: _Column, fields: list[Field], focus: int) -> None:
    width = max((len(f.label) for f in fields), default=0)
    for i, f in enumerate(fields):
        col.field(f, width, i == focus)


def login_frame(view: LoginView, cols: int, rows: int) -> Frame:
    col = _Column(cols, rows)
    banner_rows = min(3, len(view.banner.splitlines()))
    # banner, 2 rules, 4 status, blank, fields, message + help footer
    fixed = banner_rows + 2 + 4 + 1 + len(view.fields) + 2
    _header(col, view.banner, view.notice, max(1, rows - fixed))
    _status_lines(col, view.status)
    col.add()
    _fields(col, view.fields, view.focus)
    return col.frame([(view.message, view.message_style), (view.help, "dim")])


def message_frame(view: MessageView, cols: int, rows: int) -> Frame:
    """A full-screen message (lock, refusal, enrollment result), with optional fields."""
    col = _Column(cols, rows)
    if view.status is not None:
        _status_lines(col, view.status)
        col.rule()
    col.add()
    col.center(view.title, view.style)
    col.add()
    room = rows - len(col.lines) - 2 - len(view.fields) - 1
    for line in wrap_paragraphs(view.body, col.width)[: max(room, 1)]:
        col.add(line)
    if view.fields:
        col.add()
        _fields(col, view.fields, view.focus)
    return col.frame([("", ""), (view.footer, "dim")])


def session_notice(text: str, cols: int, rows: int) -> bytes:
    """One line on the bottom row over a live session (cursor and attributes kept)."""
    shown = " auditbox: " + "".join(c if c.isprintable() else "?" for c in text)
    return (f"\x1b7\x1b[{rows};1H\x1b[0;7m{shown[: cols - 1]}\x1b[0m\x1b[K\x1b8"
            ).encode()

