"""`auditbox gateway sessions list`, `audit tail|show|verify`."""

from __future__ import annotations

import json
import sys
import time

import click

from builder.errors import InputError

from ..audit import verify
from ..store import AuditEntry
from .common import Env, table, utc, with_env


@click.group("sessions")
def sessions_group() -> None:
    """Sessions (recorded as asciicast v2)."""


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@sessions_group.command("list")
@click.option("--live", is_flag=True, help="only sessions still open")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@with_env
def sessions_list(live: bool, limit: int, env: Env) -> None:
    """Sessions, newest first: who, from which terminal, how long, bytes each way."""
    rows = []
    for s in env.store.list_sessions(live_only=live, limit=limit):
        end = s.ended_at if s.ended_at is not None else time.time()
        rows.append((s.id, s.user, s.device_id or "break-glass", s.source, s.replica,
                     utc(s.started_at), f"{int(end - s.started_at)}s",
                     _size(s.bytes_in), _size(s.bytes_out),
                     "live" if s.ended_at is None else (s.end_reason or "ended")))
    click.echo(table(("SESSION", "USER", "DEVICE", "SOURCE", "REPLICA", "STARTED", "LENGTH",
                      "IN", "OUT", "STATE"), rows))


def _register_playback() -> None:
    """`sessions play` and `sessions export` (G2's gateway/cli/sessions_play.py)."""
    try:
        from .sessions_play import export_cmd, play_cmd
    except ImportError:
        return
    sessions_group.add_command(play_cmd)
    sessions_group.add_command(export_cmd)


_register_playback()


# -- audit ----------------------------------------------------------------------------------

@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


def _line(e: AuditEntry) -> str:
    data = json.dumps(e.data, sort_keys=True, separators=(",", ":"))
    return f"{e.seq:>6}  {utc(e.at)}  {e.actor}  {e.event}  {data}"


@audit_group.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100000))
@click.option("--follow", "-f", is_flag=True, help="keep printing new entries (Ctrl-C stops)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@with_env
def audit_tail(count: int, follow: bool, as_json: bool, env: Env) -> None:
    """The last N entries (oldest first)."""
    def show(e: AuditEntry) -> None:
        if as_json:
            click.echo(json.dumps({"seq": e.seq, "at": utc(e.at), "at_us": e.at_us,
                                   "actor": e.actor, "event": e.event, "data": e.data,
                                   "prev_hash": e.prev_hash, "hash": e.hash}, sort_keys=True))
        else:
            click.echo(_line(e))
        sys.stdout.flush()

    last = 0
    for e in env.store.audit_tail(count):
        show(e)
        last = e.seq
    while follow:
        time.sleep(0.5)
        for e in env.store.audit_entries(after_seq=last):
            show(e)
            last = e.seq


@audit_group.command("show")
@click.argument("seq", type=int)
@with_env
def audit_show(seq: int, env: Env) -> None:
    """One entry in full, with its hashes."""
    entry = next(iter(env.store.audit_entries(after_seq=seq - 1, limit=1)), None)
    if entry is None or entry.seq != seq:
        raise InputError(f"no audit entry {seq}", file="<command line>", key="SEQ")
    for k, v in (("seq", entry.seq), ("at", f"{utc(entry.at)} ({entry.at_us} us)"),
                 ("actor", entry.actor), ("event", entry.event),
                 ("data", json.dumps(entry.data, sort_keys=True, indent=2)),
                 ("prev_hash", entry.prev_hash), ("hash", entry.hash)):
        click.echo(f"{k:<9}  {v}")


@audit_group.command("verify")
@with_env
def audit_verify(env: Env) -> None:
    """Check the whole chain; name the first edited, dropped or reordered entry (exit 1)."""
    result = verify(env.store.audit_entries())
    if result.ok:
        click.echo(result.message)
        return
    click.echo(f"FAILED after {result.count} good entries: {result.message}")
    sys.exit(1)
