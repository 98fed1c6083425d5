"""`auditbox inspect OUT [--json]`: what a build produced, without booting it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from builder.errors import InputError


def summary(out: Path) -> dict[str, Any]:
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not an auditbox output directory (no manifest.json)", file=out,
                         key="OUT")
    m = json.loads(manifest_path.read_text())
    ref = json.loads((out / "reference.json").read_text())
    return {
        "image_id": m["image_id"], "profile": m["profile"]["name"], "suite": m["suite"],
        "kernel": m["kernel_version"], "cmdline": m["kernel_cmdline"], "roothash": m["roothash"],
        "image_size": m["image_size"], "partitions": m["partitions"],
        "predicted_pcrs": ref["pcrs"], "uki_authenticode_sha256": ref["uki_authenticode_sha256"],
        "packages": len(m["packages"]), "rules": m["rules"],
        "removed_kernel_modules": len(m["removed"]["kernel_modules"]),
        "build_seconds": m["build"].get("seconds"),
    }


@click.command("inspect")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(out: Path, as_json: bool) -> None:
    """Summarise a build output directory: profile, sizes, partitions, root hash, PCRs, rules."""
    s = summary(out)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    mib = 1 << 20
    click.echo(f"image      {s['image_id']}  ({s['image_size'] / mib:.1f} MiB)")
    click.echo(f"profile    {s['profile']} ({s['suite']}, kernel {s['kernel']})")
    click.echo(f"roothash   {s['roothash']}")
    click.echo(f"cmdline    {s['cmdline']}")
    for p in s["partitions"]:
        click.echo(f"partition  {p['type']:<22} {int(p['raw_size']) / mib:8.1f} MiB  {p['uuid']}")
    for pcr, value in sorted(s["predicted_pcrs"].items()):
        click.echo(f"PCR {pcr:<6} {value} (predicted)")
    click.echo(f"packages   {s['packages']}; kernel modules removed: "
               f"{s['removed_kernel_modules']}")
    click.echo(f"rules      {len(s['rules'])}: {' '.join(s['rules'])}")
