"""`auditbox gateway ...`: the gateway's command line (a click group).

builder/cli.py loads this module only when `auditbox gateway` runs, so `auditbox build`
never imports the gateway, asyncssh or psycopg.
"""

from __future__ import annotations

import click

from .admin import alerts_group, image_group, lock_cmd, locks_group, unlock_cmd
from .devices import device_group
from .init import init_cmd
from .records import audit_group, sessions_group
from .serve import check_cmd, serve_cmd
from .users import user_group

HELP = "The gateway: init, serve, users, devices, images, locks, sessions, audit, alerts."


@click.group("gateway", help=HELP)
def gateway_group() -> None:
    pass


for _command in (init_cmd, serve_cmd, check_cmd, user_group, device_group, image_group,
                 lock_cmd, unlock_cmd, locks_group, sessions_group, audit_group, alerts_group):
    gateway_group.add_command(_command)
