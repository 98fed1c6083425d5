"""`auditbox gateway user add|remove|list|reset-otp|unlock`."""

from __future__ import annotations

import io
import sys
import time

import click

from builder.errors import InputError

from .. import passwords, totp
from ..config import ENROLL_USER
from ..store import StoreConflict, User
from .common import Env, check_name, table, utc, with_env

ROLES = ("auditor", "observer", "admin")


def qr_text(data: str) -> str:
    """A QR code in terminal characters (two modules per character cell)."""
    import qrcode

    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(data)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    problem = passwords.check_policy(password)
    if problem:
        raise InputError(problem, file="<password>",
                         allowed=f"at least {passwords.MIN_LENGTH} characters, 5 different")
    return password


def _show_secret(name: str, secret: str, qr: bool) -> None:
    uri = totp.provisioning_uri(secret, name)
    click.echo("one-time code secret (shown once; scan the QR code or enter the URI in an "
               "authenticator app):")
    click.echo(uri)
    if qr:
        click.echo(qr_text(uri), nl=False)


@click.group("user")
def user_group() -> None:
    """Gateway users: password + one-time code, mapped to a harness account."""


@user_group.command("add")
@click.argument("name")
@click.option("--upstream", "upstream", metavar="ACCOUNT",
              help="the user's account on the research harness (default: NAME)")
@click.option("--role", type=click.Choice(ROLES), default="auditor", show_default=True)
@click.option("--break-glass", is_flag=True,
              help="allow log-ins without attestation (each one audited and alerted)")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin's first line")
@click.option("--no-qr", is_flag=True, help="print the otpauth URI only")
@with_env
def user_add(name: str, upstream: str | None, role: str, break_glass: bool,
             password_stdin: bool, no_qr: bool, env: Env) -> None:
    """Add user NAME; prints the one-time code secret (otpauth URI and QR code)."""
    check_name(name, "user name", "NAME")
    if name == ENROLL_USER:
        raise InputError(f"{ENROLL_USER!r} is reserved for enrolling terminals",
                         file="<command line>", key="NAME")
    account = check_name(upstream or name, "upstream account name", "--upstream")
    store = env.store
    if store.get_user(name) is not None:
        raise InputError(f"user {name!r} already exists", file="<command line>", key="NAME")
    password = _read_password(password_stdin)
    secret = totp.new_secret()
    user = User(name, passwords.hash_password(password), secret, account, role, break_glass,
                time.time())
    try:
        store.add_user(user)
    except StoreConflict:
        raise InputError(f"user {name!r} already exists", file="<command line>",
                         key="NAME") from None
    env.auditor.log("user.add", user=name, upstream=account, role=role,
                    break_glass=break_glass)
    extra = ", break-glass allowed" if break_glass else ""
    click.echo(f"user {name} added (upstream account {account}, role {role}{extra})")
    _show_secret(name, secret, not no_qr)


@user_group.command("remove")
@click.argument("name")
@with_env
def user_remove(name: str, env: Env) -> None:
    """Remove user NAME (their live sessions are not ended: lock them first)."""
    if not env.store.remove_user(name):
        raise InputError(f"no user {name!r}", file="<command line>", key="NAME")
    env.store.clear_failures("user", name)
    env.store.clear_lockout("user", name)
    env.auditor.log("user.remove", user=name)
    click.echo(f"user {name} removed")


@user_group.command("list")
@with_env
def user_list(env: Env) -> None:
    """Users, their harness account, role, break-glass and lockout."""
    now = time.time()
    locked = {k: until for scope, k, until in env.store.list_lockouts(now) if scope == "user"}
    rows = [(u.name, u.upstream_user, u.role, "yes" if u.break_glass else "no",
             utc(u.created_at), f"until {utc(locked[u.name])}" if u.name in locked else "-")
            for u in env.store.list_users()]
    click.echo(table(("USER", "UPSTREAM", "ROLE", "BREAK-GLASS", "CREATED", "LOCKED-OUT"),
                     rows))


@user_group.command("reset-otp")
@click.argument("name")
@click.option("--no-qr", is_flag=True, help="print the otpauth URI only")
@with_env
def user_reset_otp(name: str, no_qr: bool, env: Env) -> None:
    """Give NAME a new one-time code secret (the old codes stop working)."""
    secret = totp.new_secret()
    if not env.store.update_user(name, totp_secret=secret, last_totp_step=-1):
        raise InputError(f"no user {name!r}", file="<command line>", key="NAME")
    env.auditor.log("user.reset-otp", user=name)
    click.echo(f"user {name}: new one-time code secret")
    _show_secret(name, secret, not no_qr)


@user_group.command("unlock")
@click.argument("name")
@with_env
def user_unlock(name: str, env: Env) -> None:
    """End NAME's lockout after failed log-ins (administrator locks: `gateway unlock`)."""
    if env.store.get_user(name) is None:
        raise InputError(f"no user {name!r}", file="<command line>", key="NAME")
    was = env.store.lockout_until("user", name, time.time())
    env.store.clear_lockout("user", name)
    env.store.clear_failures("user", name)
    env.auditor.log("user.unlock", user=name, was_locked_out=was is not None)
    click.echo(f"user {name}: lockout cleared" if was is not None
               else f"user {name}: was not locked out; failure count cleared")
