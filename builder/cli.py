"""The auditbox command line. Every error is one line; bad input exits 2, build failures 1."""

from __future__ import annotations

import importlib
import sys

import click

from builder import __version__
from builder.errors import AuditboxError, error_line


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
    from builder.commands.inspect import inspect_cmd
    from builder.commands.profile import profile_group, validate_cmd
    from builder.commands.rules import report_cmd, rules_group
    from builder.commands.run import run_cmd

    for command in (build_cmd, validate_cmd, run_cmd, profile_group, rules_group, report_cmd,
                    attest_group, inspect_cmd):
        cli.add_command(command)


_register()


def _failure(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit code for an error that ends a command."""
    if isinstance(exc, AuditboxError):
        return error_line(exc), exc.exit_code
    if isinstance(exc, click.UsageError):
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        return f"error: <command line>: {where}{exc.format_message()}", 2
    if isinstance(exc, click.ClickException):
        return f"error: {exc.format_message()}", exc.exit_code
    return ("error: interrupted" if isinstance(exc, KeyboardInterrupt) else "error: aborted"), 130


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place that prints an error (`error: ...`, one line)."""
    try:
        cli.main(args=argv, prog_name="auditbox", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (AuditboxError, click.ClickException, click.Abort, KeyboardInterrupt) as exc:
        line, code = _failure(exc)
        click.echo(line.replace("\n", " "), err=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
