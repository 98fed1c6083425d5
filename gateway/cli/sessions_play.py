"""`auditbox gateway sessions play ID [--speed N]` and `sessions export ID [-o FILE]`.

Registered by gateway/cli/sessions.py. A recording is found through the store's
session row (``recording``, relative to the config's ``recordings`` directory).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from builder.errors import InputError

from .. import recording
from .common import Env, with_env


def recording_path(env: Env, session_id: str) -> Path:
    """The recording file of a session; InputError if there is none."""
    row = env.store.get_session(session_id)
    if row is None:
        raise InputError(f"no session {session_id!r} (see `auditbox gateway sessions list`)",
                         file="<command line>", key="ID")
    path = env.config.recordings / row.recording
    if not path.is_file():
        raise InputError(f"the recording of session {session_id} is missing", file=path)
    return path


@click.command("play")
@click.argument("session_id", metavar="ID")
@click.option("--speed", type=click.FloatRange(min=0.01, max=1000.0), default=1.0,
              show_default=True, help="Replay speed (2 = twice as fast).")
@click.option("--max-idle", type=click.FloatRange(min=0.0), default=None,
              help="Cap every pause at this many seconds.")
@with_env
def play_cmd(session_id: str, speed: float, max_idle: float | None, env: Env) -> None:
    """Replay a session's recording in this terminal, with its timing."""
    path = recording_path(env, session_id)
    try:
        recording.play(path, sys.stdout.buffer, speed=speed, max_idle=max_idle)
    except recording.RecordingError as exc:
        raise InputError(str(exc)) from None


@click.command("export")
@click.argument("session_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the asciicast v2 file here (default: standard output).")
@with_env
def export_cmd(session_id: str, output: str | None, env: Env) -> None:
    """Write a session's recording as an asciicast v2 file (asciinema plays it)."""
    path = recording_path(env, session_id)
    try:
        if output is None:
            recording.export(path, sys.stdout.buffer)
            return
        target = Path(output)
        fd, tmp = tempfile.mkstemp(dir=target.absolute().parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                recording.export(path, f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except recording.RecordingError as exc:
        raise InputError(str(exc)) from None
