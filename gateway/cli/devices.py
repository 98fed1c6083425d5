"""`auditbox gateway device token create|list`, `device list|show|revoke ID`."""

from __future__ import annotations

import time

import click

from builder.errors import InputError

from .. import enrollment
from ..config import format_duration
from .common import Env, duration_option, table, utc, with_env


@click.group("device")
def device_group() -> None:
    """Enrolled terminals and one-time enrollment tokens."""


@device_group.group("token")
def token_group() -> None:
    """One-time enrollment tokens."""


@token_group.command("create")
@click.option("--mode", type=click.Choice(enrollment.MODES), default="tpm2", show_default=True,
              help="the terminal's attestation mode (soft also needs attestation.allow_soft)")
@click.option("--ttl", default="1h", show_default=True, help="lifetime: 30m, 1h, 2d")
@with_env
def token_create(mode: str, ttl: str, env: Env) -> None:
    """Make a one-time token a terminal enrolls with (shown once)."""
    seconds = duration_option(ttl, "--ttl")
    assert seconds is not None
    if mode == "soft" and not env.config.attestation.allow_soft:
        click.echo("warning: attestation.allow_soft is false: soft terminals are refused "
                   "until it is set", err=True)
    text, tok = enrollment.create_token(env.store, env.auditor, mode, seconds,
                                        env.auditor.actor)
    click.echo(f"enrollment token ({mode}, one use, expires {utc(tok.expires_at)}, "
               f"id {tok.token_hash[:12]}):")
    click.echo(text)


@token_group.command("list")
@with_env
def token_list(env: Env) -> None:
    """Tokens by id (the first 12 hex digits of their hash): mode, expiry, use."""
    now = time.time()
    rows = [(t.token_hash[:12], t.mode, utc(t.created_at), utc(t.expires_at), t.created_by,
             enrollment.token_state(t, now)) for t in env.store.list_tokens()]
    click.echo(table(("TOKEN", "MODE", "CREATED", "EXPIRES", "BY", "STATE"), rows))


def _last(d_at: float | None, result: str | None, step: str | None) -> str:
    if d_at is None:
        return "never"
    return f"{utc(d_at)} {result}" + (f" at {step}" if step else "")


@device_group.command("list")
@with_env
def device_list(env: Env) -> None:
    """Enrolled terminals: mode, image, status, enrolled at, last attestation."""
    rows = [(d.device_id, d.mode, d.image_id, d.status, utc(d.enrolled_at),
             _last(d.last_attest_at, d.last_attest_result, d.last_attest_step))
            for d in env.store.list_devices()]
    click.echo(table(("DEVICE", "MODE", "IMAGE", "STATUS", "ENROLLED", "LAST ATTESTATION"),
                     rows))


@device_group.command("show")
@click.argument("device_id")
@click.option("--history", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="attestations to list")
@with_env
def device_show(device_id: str, history: int, env: Env) -> None:
    """One terminal: enrollment record, last TPM clock, recent attestations."""
    d = env.store.get_device(device_id)
    if d is None:
        raise InputError(f"no device {device_id!r}", file="<command line>", key="ID")
    rec = d.record
    clock = rec.get("last_clock")
    fw = rec.get("firmware_pcrs") or {}
    lines = [
        ("device", d.device_id), ("mode", d.mode), ("status", d.status),
        ("image", d.image_id), ("enrolled", utc(d.enrolled_at)),
        ("ek certificate", d.ek_cert), ("ek hash", rec.get("ek_hash") or "-"),
        ("ak name", rec.get("ak_name", "-")),
        ("last attestation", _last(d.last_attest_at, d.last_attest_result,
                                   d.last_attest_step)),
        ("last refusal", d.last_attest_reason or "-"),
        ("last TPM clock", "-" if not clock else
         f"clock {clock['clock']} ms, resets {clock['reset_count']}, "
         f"restarts {clock['restart_count']}"),
        ("firmware PCRs", ", ".join(f"{k}={v[:12]}" for k, v in sorted(
            fw.items(), key=lambda kv: int(kv[0]))) or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k.ljust(width)}  {v}")
    if history:
        hist = env.store.attestation_history(device_id, history)
        click.echo("")
        click.echo(table(("AT", "RESULT", "STEP", "SESSION", "REASON"),
                         [(utc(a.at), a.result, a.step or "-", (a.session_id or "-")[:16],
                           a.reason or "-") for a in hist]) if hist else "no attestations yet")


@device_group.command("revoke")
@click.argument("device_id")
@with_env
def device_revoke(device_id: str, env: Env) -> None:
    """Revoke a terminal: it can no longer attest (lock it to end a live session now)."""
    d = env.store.get_device(device_id)
    if d is None:
        raise InputError(f"no device {device_id!r}", file="<command line>", key="ID")
    if d.status == "revoked":
        click.echo(f"device {device_id} was already revoked")
        return
    env.store.update_device(device_id, status="revoked", record={**d.record,
                                                                  "status": "revoked"})
    env.auditor.log("device.revoke", device_id=device_id)
    click.echo(f"device {device_id} revoked")


__all__ = ["device_group", "format_duration"]
