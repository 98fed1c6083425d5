"""`auditbox gateway image ...`, `lock`, `unlock`, `locks list`, `alerts ...`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from builder.errors import InputError

from .. import images, locks
from .common import Env, duration_option, table, utc, with_env

# -- images -------------------------------------------------------------------------------


@click.group("image")
def image_group() -> None:
    """Registered images (signed reference.json) terminals are attested against."""


@image_group.command("add")
@click.argument("out_dir", type=click.Path(path_type=Path))
@with_env
def image_add(out_dir: Path, env: Env) -> None:
    """Register OUT_DIR/reference.json after checking its signature with a key listed in
    trusted_build_keys (the same keys the running gateway trusts)."""
    keys = images.load_trusted_keys(env.config.trusted_build_keys)
    image, data = images.add_image(env.store, env.auditor, out_dir, keys, env.auditor.actor)
    click.echo(f"image {image.image_id} registered")
    click.echo(f"  uki sha256   {data['uki_sha256']}")
    click.echo(f"  authenticode {data['uki_authenticode_sha256']}")
    click.echo(f"  roothash     {data['roothash'] or '-'}")


@image_group.command("list")
@with_env
def image_list(env: Env) -> None:
    """Registered images."""
    rows = [(i.image_id, utc(i.added_at), i.added_by,
             "revoked " + utc(i.revoked_at) if i.revoked_at else "active")
            for i in env.store.list_images()]
    click.echo(table(("IMAGE", "ADDED", "BY", "STATUS"), rows))


@image_group.command("revoke")
@click.argument("image_id")
@with_env
def image_revoke(image_id: str, env: Env) -> None:
    """Revoke an image: terminals running it are refused at their next attestation."""
    if env.store.get_image(image_id) is None:
        raise InputError(f"no image {image_id!r}", file="<command line>", key="IMAGE_ID")
    if not images.revoke_image(env.store, env.auditor, image_id, env.auditor.actor):
        click.echo(f"image {image_id} was already revoked")
        return
    click.echo(f"image {image_id} revoked")


# -- locks ---------------------------------------------------------------------------------

def _target(device: str | None, user: str | None) -> tuple[str, str]:
    if (device is None) == (user is None):
        raise InputError("give exactly one of --device ID or --user NAME",
                         file="<command line>", key="lock")
    return ("device", device) if device is not None else ("user", str(user))


@click.command("lock")
@click.option("--device", metavar="ID", help="lock this terminal")
@click.option("--user", metavar="NAME", help="lock this user")
@click.option("--reason", default="", help="message shown on the terminal")
@click.option("--ttl", help="lift the lock by itself after this long: 30m, 8h, 7d")
@with_env
def lock_cmd(device: str | None, user: str | None, reason: str, ttl: str | None,
             env: Env) -> None:
    """Lock a terminal or a user: live sessions end within a second, new log-ins are refused."""
    kind, target = _target(device, user)
    seconds = duration_option(ttl, "--ttl")
    problem = locks.check_reason(reason)
    if problem:
        raise InputError(problem, file="<command line>", key="--reason")
    exists = (env.store.get_device(target) if kind == "device"
              else env.store.get_user(target)) is not None
    if not exists:
        raise InputError(f"no {kind} {target!r}", file="<command line>", key=f"--{kind}")
    lock_id = locks.add_lock(env.store, env.auditor, kind, target, reason, env.auditor.actor,
                             seconds)
    until = f", until {utc(time.time() + seconds)}" if seconds else ""
    click.echo(f"lock {lock_id}: {kind} {target} locked{until}: "
               f"{reason or locks.DEFAULT_REASON}")


@click.command("unlock")
@click.argument("lock_id", required=False, type=int)
@click.option("--device", metavar="ID", help="remove every lock on this terminal")
@click.option("--user", metavar="NAME", help="remove every lock on this user")
@with_env
def unlock_cmd(lock_id: int | None, device: str | None, user: str | None, env: Env) -> None:
    """Remove a lock by id, or every lock on --device ID or --user NAME."""
    now = time.time()
    if lock_id is not None:
        if device or user:
            raise InputError("give a lock id or --device/--user, not both",
                             file="<command line>", key="unlock")
        ids = [lock_id]
        if not any(lk.id == lock_id for lk in env.store.active_locks(now)):
            raise InputError(f"no active lock {lock_id}", file="<command line>", key="LOCK_ID")
    else:
        kind, target = _target(device, user)
        ids = [lk.id for lk in env.store.active_locks(now)
               if lk.target_kind == kind and lk.target == target and lk.id is not None]
        if not ids:
            raise InputError(f"no active lock on {kind} {target!r}", file="<command line>",
                             key=f"--{kind}")
    for i in ids:
        locks.remove_lock(env.store, env.auditor, i, env.auditor.actor, now)
        click.echo(f"lock {i} removed")


@click.group("locks")
def locks_group() -> None:
    """Remote locks."""


@locks_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="also removed and expired locks")
@with_env
def locks_list(show_all: bool, env: Env) -> None:
    """Locks in force (with --all: every lock ever set)."""
    now = time.time()
    rows = []
    for lk in (env.store.list_locks(1000) if show_all else env.store.active_locks(now)):
        if lk.removed_at is not None:
            state = f"removed {utc(lk.removed_at)} by {lk.removed_by}"
        elif lk.expires_at is not None and lk.expires_at <= now:
            state = f"expired {utc(lk.expires_at)}"
        else:
            state = "until " + utc(lk.expires_at) if lk.expires_at else "active"
        rows.append((lk.id, lk.target_kind, lk.target, utc(lk.created_at), lk.created_by,
                     state, lk.reason))
    click.echo(table(("ID", "KIND", "TARGET", "SINCE", "BY", "STATE", "REASON"), rows))


# -- alerts --------------------------------------------------------------------------------

@click.group("alerts")
def alerts_group() -> None:
    """Alerts raised by anomaly rules, break-glass log-ins and terminals."""


@alerts_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="only alerts not yet acknowledged")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@with_env
def alerts_list(open_only: bool, limit: int, env: Env) -> None:
    """Alerts, newest first."""
    rows = [(a.id, utc(a.at), a.rule, a.severity, a.action, a.user or "-",
             a.device_id or "-", f"acked by {a.acked_by}" if a.acked_at else "open", a.detail)
            for a in env.store.list_alerts(open_only, limit)]
    click.echo(table(("ID", "AT", "RULE", "SEVERITY", "ACTION", "USER", "DEVICE", "STATE",
                      "DETAIL"), rows))


@alerts_group.command("ack")
@click.argument("alert_id", type=int)
@click.option("--comment", default="", help="why it is closed")
@with_env
def alerts_ack(alert_id: int, comment: str, env: Env) -> None:
    """Acknowledge an alert."""
    problem = locks.check_reason(comment)
    if problem:
        raise InputError(problem, file="<command line>", key="--comment")
    if not env.store.ack_alert(alert_id, env.auditor.actor, comment, time.time()):
        raise InputError(f"no open alert {alert_id}", file="<command line>", key="ALERT_ID")
    env.auditor.log("alert.ack", id=alert_id, comment=comment)
    click.echo(f"alert {alert_id} acknowledged")
