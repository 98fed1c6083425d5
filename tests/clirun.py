"""Run `auditbox ARGS...` in-process through builder.cli.main, the one place that turns
errors into their `error: ...` line and exit code (a CliRunner on a subcommand skips it)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from builder.cli import main


@dataclass(frozen=True)
class Result:
    exit_code: int
    output: str       # stdout
    stderr: str

    def error_line(self) -> str:
        """The one `error: ...` line of a failed run (and nothing else on stderr)."""
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        assert "Traceback" not in self.stderr
        return lines[0]


def run_main(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())
