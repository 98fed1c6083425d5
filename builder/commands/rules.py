"""`auditbox rules list|show` and `auditbox report OUT` (registered in builder/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from builder import paths
from builder.errors import InputError
from builder.profile.model import Profile
from builder.rules import describe, load_catalogue, rule_checks
from builder.rules.engine import selection
from builder.rules.report import write_report
from builder.rules.results import load

DEFAULT_PROFILE = paths.DEFAULT_PROFILE


def resolve_profile(path: Path | None) -> Profile:
    """The given profile, else the shipped profiles/audit-laptop.yaml (its `rules:` is the
    default selection)."""
    from builder.profile import load_profile

    return load_profile(path if path is not None else DEFAULT_PROFILE)


profile_option = click.option(
    "--profile", "profile_path", type=click.Path(path_type=Path, dir_okay=False),
    help="Profile whose variables to use (default: profiles/audit-laptop.yaml).")


@click.group("rules")
def rules_group() -> None:
    """The hardening rule catalogue."""


@rules_group.command("list")
@profile_option
@click.option("--selected", is_flag=True, help="Only the rules the profile selects.")
def list_cmd(profile_path: Path | None, selected: bool) -> None:
    """Table of rule id, severity, kind and title."""
    catalogue = load_catalogue()
    ids = list(catalogue)
    if selected:
        ids = selection(resolve_profile(profile_path), catalogue)
    width = max(len(i) for i in ids) if ids else 2
    click.echo(f"{'ID':<{width}}  {'SEVERITY':<8}  {'KIND':<14}  TITLE")
    for rid in ids:
        r = catalogue[rid]
        click.echo(f"{r.id:<{width}}  {r.severity:<8}  {r.kind:<14}  {r.title}")


@rules_group.command("show")
@click.argument("rule_id")
@profile_option
def show_cmd(rule_id: str, profile_path: Path | None) -> None:
    """Everything about one rule: rationale, references, variables, mechanism, checks."""
    catalogue = load_catalogue()
    if rule_id not in catalogue:
        raise InputError(f"unknown rule {rule_id!r}", key="RULE_ID",
                         allowed="see `auditbox rules list`")
    rule = catalogue[rule_id]
    profile = resolve_profile(profile_path)
    mechanism = describe(rule, profile)
    checks = rule_checks(rule, profile)
    click.echo(f"{rule.id}: {rule.title}")
    click.echo(f"severity: {rule.severity}    kind: {rule.kind}    file: {rule.source}")
    click.echo(f"\nrationale:\n  {rule.rationale}")
    if rule.references:
        click.echo("\nreferences:")
        for k, names in rule.references.items():
            click.echo(f"  {k}: {', '.join(names) or '-'}")
    if rule.vars:
        click.echo("\nvariables (rule_vars." + rule.id + "):")
        for v in rule.vars.values():
            click.echo(f"  {v.name} ({v.type}, default {v.default!r}): {v.help}")
    click.echo(f"\nmechanism (profile {profile.name}):")
    for line in mechanism.splitlines():
        click.echo("  " + line)
    click.echo("\nchecks:")
    for c in checks:
        click.echo(f"  [{c.where:<6}] {c.name}: {c.description}")


@click.command("report")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@profile_option
@click.option("--results", "results_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Check results JSON (default: OUT/check-results.json).")
def report_cmd(out: Path, profile_path: Path | None, results_file: Path | None) -> None:
    """Write OUT/report.md and OUT/report.html: one row per rule with its results."""
    profile = resolve_profile(profile_path)
    catalogue = load_catalogue()
    rules = [catalogue[i] for i in selection(profile, catalogue)]
    results_path = results_file or out / "check-results.json"
    try:
        results = load(results_path)
    except ValueError as e:
        raise InputError(str(e), file=results_path) from None
    md, page = write_report(out, rules, profile, results)
    click.echo(f"wrote {md} and {page}")
