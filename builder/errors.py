"""Errors the CLI turns into one line and an exit code.

InputError (exit 2): the user's input is wrong: a profile, an option, a file given.
BuildError (exit 1): the input was fine but a build step failed.
"""

from __future__ import annotations

from pathlib import Path


class AuditboxError(Exception):
    exit_code = 1


class InputError(AuditboxError):
    """Bad input. Renders as `FILE:LINE: key.path: what is wrong (allowed: ...)`."""

    exit_code = 2

    def __init__(self, message: str, *, file: Path | str | None = None, line: int | None = None,
                 key: str | None = None, allowed: str | list[str] | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        if isinstance(allowed, list):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.key:
            parts.append(self.key)
        text = ": ".join([*parts, self.message])
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text.replace("\n", " ")


def error_line(error: AuditboxError) -> str:
    """The one line the CLI (builder/cli.py main, the only place that prints it) shows."""
    return f"error: {error}"


class BuildError(AuditboxError):
    """A build step failed; the message names the step and where its log is."""

    exit_code = 1
