"""`auditbox validate PROFILE` and `auditbox profile schema [--json]` (registered in
builder/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.errors import InputError, error_line
from builder.planner import make_plan
from builder.profile import load_profile, schema_json, schema_text
from builder.profile.model import Profile


def check_profile(path: Path) -> tuple[int, str, Profile | None]:
    """Load a profile the way `auditbox validate` does: (exit code, one line, profile)."""
    try:
        profile = load_profile(path)
    except InputError as e:
        return e.exit_code, error_line(e), None
    return 0, f"ok: {profile.name} ({len(profile.sources)} files)", profile


@click.command("validate")
@click.argument("profile", type=click.Path(path_type=Path, dir_okay=True))
def validate_cmd(profile: Path) -> None:
    """Load and check PROFILE (and the profiles it extends); build nothing."""
    loaded = load_profile(profile)
    # resolving the plan checks what only the rule catalogue knows (ids, variables)
    plan = make_plan(loaded)
    click.echo(f"ok: {loaded.name} ({len(loaded.sources)} files, {len(plan.rule_ids)} rules, "
               f"{len(plan.packages)} packages)")


@click.group("profile")
def profile_group() -> None:
    """Profile format tools."""


@profile_group.command("schema")
@click.option("--json", "as_json", is_flag=True, help="Print the schema as JSON.")
def schema_cmd(as_json: bool) -> None:
    """Print every profile key with its type, default, allowed values and help."""
    if as_json:
        click.echo(json.dumps(schema_json(), indent=2, sort_keys=False))
    else:
        click.echo(schema_text(), nl=False)
