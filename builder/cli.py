"""The auditbox command line. Every error is one line; bad input exits 2, build failures 1."""

from __future__ import annotations

import importlib
import sys

import click

from builder import __version__
from builder.errors import AuditboxError


class _Cli(click.Group):
    """The main group; some subgroups are imported only when they run (``LAZY``)."""

    # name -> (module, attribute, short help shown without importing the module)
    LAZY = {"gateway": ("gateway.cli", "gateway_group",
                        "The gateway: init, serve, users, devices, images, locks, audit.")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, attr, _ = self.LAZY[name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.LAZY:
                rows.append((name, self.LAZY[name][2]))
                continue
            cmd = super().get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditbox")
def cli() -> None:
    """Build, run and check hardened audit-terminal images."""


def _register() -> None:
    from attestation.admin_cli import attest_group
    from builder.commands.build import build_cmd
    from builder.commands.profile import profile_group, validate_cmd
    from builder.commands.rules import report_cmd, rules_group
    from builder.commands.run import run_cmd

    for command in (build_cmd, validate_cmd, run_cmd, profile_group, rules_group, report_cmd,
                    attest_group):
        cli.add_command(command)
    try:
        from builder.commands.inspect import inspect_cmd
    except ImportError:
        return
    cli.add_command(inspect_cmd)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="auditbox", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        click.echo(f"error: <command line>: {where}{exc.format_message()}".replace("\n", " "),
                   err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except AuditboxError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
