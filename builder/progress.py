"""Build progress: numbered steps on the terminal, everything (and tool output) in build.log."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from builder.errors import BuildError


class BuildLog:
    def __init__(self, path: Path, quiet: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self._step = 0

    def close(self) -> None:
        self._file.close()

    def write(self, text: str) -> None:
        self._file.write(text if text.endswith("\n") else text + "\n")
        self._file.flush()

    def say(self, text: str) -> None:
        self.write(text)
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._step += 1
        label = f"[{self._step}] {name}"
        self.say(f"{label} ...")
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.say(f"{label} FAILED after {time.monotonic() - start:.1f}s (log: {self.path})")
            raise
        elapsed = time.monotonic() - start
        self.timings[name] = round(elapsed, 2)
        self.say(f"{label} done in {elapsed:.1f}s")

    def run(self, argv: Sequence[str | Path], *, what: str | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            capture: bool = False, merge_stderr: bool = False, check: bool = True) -> str:
        """Run a command, its output into the log; raise BuildError naming it on failure
        (with check=False a failure is only logged). Every tool the build calls goes
        through here, so a failing one always ends as the CLI's one-line error.

        With capture=True, stdout is returned (stderr still goes to the log, or is
        returned with it when merge_stderr=True).
        """
        args = [str(a) for a in argv]
        self.write("$ " + " ".join(args))
        try:
            proc = subprocess.run(
                args, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else self._file,
                stderr=subprocess.STDOUT if merge_stderr else self._file,
                env=env, cwd=cwd, text=True, check=False,
            )
        except OSError as exc:      # not installed, not executable
            self.write(f"cannot run {args[0]}: {exc}")
            raise BuildError(f"{what or args[0]}: cannot run {args[0]}: {exc.strerror} "
                             f"(log: {self.path})") from None
        if capture and merge_stderr:
            self.write(proc.stdout)
        if proc.returncode != 0 and not check:
            self.write(f"(exit code {proc.returncode}, ignored)")
        elif proc.returncode != 0:
            raise BuildError(
                f"{what or args[0]} failed with exit code {proc.returncode} (log: {self.path})")
        return proc.stdout if capture else ""
