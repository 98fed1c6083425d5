"""`auditbox build PROFILE [-o OUT] [--cache DIR] [--mirror URL] [--format qcow2]`."""

from __future__ import annotations

from pathlib import Path

import click

from builder import reproducible
from builder.cache import default_cache_dir
from builder.errors import BuildError, InputError
from builder.pipeline import BuildOptions, build
from builder.profile.validators import _mirror


@click.command("build")
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="Output directory (replaced atomically at the end).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Cache directory [default: ~/.cache/auditbox or $AUDITBOX_CACHE].")
@click.option("--mirror", default=None, help="Debian mirror URL (overrides the profile's).")
@click.option("--format", "formats", type=click.Choice(["raw", "qcow2"]), multiple=True,
              help="Extra output formats (raw is always written).")
@click.option("--signing-key", type=click.Path(path_type=Path), default=None,
              help="Ed25519 build key (PEM, must exist) that signs reference.json [default: "
                   "one kept in the cache, made on first use].")
@click.option("--secure-boot-key", type=click.Path(path_type=Path), default=None,
              help="PEM RSA private key that signs the UKI for Secure Boot (with "
                   "--secure-boot-cert); overrides the profile's secure_boot.key.")
@click.option("--secure-boot-cert", type=click.Path(path_type=Path), default=None,
              help="PEM certificate matching --secure-boot-key (enroll it in the firmware db).")
@click.option("--check-reproducible", is_flag=True,
              help="Build twice from the same inputs and compare the images byte for byte.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on the terminal; all in build.log.")
def build_cmd(profile: Path, out: Path, cache: Path | None, mirror: str | None,
              formats: tuple[str, ...], signing_key: Path | None,
              secure_boot_key: Path | None, secure_boot_cert: Path | None,
              check_reproducible: bool, quiet: bool) -> None:
    """Build the disk image described by PROFILE into OUT."""
    if mirror is not None:
        problem = _mirror(mirror)
        if problem:
            raise InputError(problem, file="<command line>", key="--mirror")
    if (secure_boot_key is None) != (secure_boot_cert is None):
        raise InputError("give both --secure-boot-key and --secure-boot-cert, or neither",
                         file="<command line>", key="--secure-boot-key")
    for option, path in (("--secure-boot-key", secure_boot_key),
                         ("--secure-boot-cert", secure_boot_cert), ("--signing-key", signing_key)):
        if path is not None and not path.is_file():
            raise InputError("file not found", file=path, key=option)
    opts = BuildOptions(profile=profile, out=out, cache=cache or default_cache_dir(),
                        mirror=mirror, formats=formats, signing_key=signing_key,
                        secure_boot_key=secure_boot_key, secure_boot_cert=secure_boot_cert,
                        quiet=quiet)
    if check_reproducible:
        same, message = reproducible.check_reproducible(opts)
        click.echo(message)
        if not same:
            raise BuildError(message)
        return
    manifest = build(opts)
    click.echo(f"built {manifest['image_id']} in {manifest['build']['seconds']}s: {out}/image.raw "
               f"({manifest['image_size'] // (1 << 20)} MiB)")
