"""`auditbox gateway serve` and `auditbox gateway check`."""

from __future__ import annotations

import asyncio
import sys

import click

from ..store import StoreBusy, StoreError
from .common import StoreUnavailable, env_context, load_env


@click.command("serve")
@click.option("--config", "config_path", metavar="PATH",
              help="gateway.yaml (default: $AUDITBOX_GATEWAY_CONFIG or ./gateway.yaml)")
@click.option("--database", metavar="URL", help="store instead of the config's")
def serve_cmd(config_path: str | None, database: str | None) -> None:
    """Serve terminals (SSH) until SIGTERM or SIGINT."""
    env = load_env(config_path, database)
    env.config.require_upstream()
    from ..server import serve_forever  # asyncssh is loaded only here

    try:
        code = asyncio.run(serve_forever(env.config))
    except StoreBusy as exc:      # two processes on one SQLite file: refused at start
        raise env.config.error("database", str(exc),
                               "a postgresql:// URL for several replicas") from None
    except StoreError as exc:
        raise StoreUnavailable(f"store: {exc}") from None
    sys.exit(code)


@click.command("check")
@click.option("--config", "config_path", metavar="PATH",
              help="gateway.yaml (default: $AUDITBOX_GATEWAY_CONFIG or ./gateway.yaml)")
@click.option("--database", metavar="URL", help="store instead of the config's")
def check_cmd(config_path: str | None, database: str | None) -> None:
    """Load and check gateway.yaml, open the store; change nothing."""
    with env_context(config_path, database) as env:
        users = len(env.store.list_users())
        devices = len(env.store.list_devices())
    up = env.config.upstream.kind or "not configured (serve refuses)"
    click.echo(f"ok: {env.config.path or 'defaults'}: {users} users, {devices} devices, "
               f"upstream {up}")
