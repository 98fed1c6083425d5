"""`auditbox gateway init --dir DIR`: a commented gateway.yaml, an Ed25519 host key
(OpenSSH format, 0600), an empty store and a recordings directory, written into a
temporary directory and moved into DIR at the end (nothing half-written). Prints the
host key's fingerprint and the profile lines a terminal needs."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.errors import InputError
from builder.profile.validators import HOST_OR_IP, IP_ADDRESS

from ..audit import Auditor
from ..config import load_config, render_commented
from ..store import is_postgres
from ..web.tls import make_self_signed
from .common import actor, open_env_store

FILES = ("gateway.yaml", "host_key", "host_key.pub", "store.db", "recordings", "web_cert.pem",
         "web_key.pem")


def fingerprint(public_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def new_host_key(comment: str) -> tuple[bytes, str]:
    """(OpenSSH private key PEM, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _gateway_host(listen: str, given: str | None) -> str:
    if given is not None:
        problem = HOST_OR_IP(given)
        if problem:
            raise InputError(problem, file="<command line>", key="--gateway-host",
                             allowed=HOST_OR_IP.describe)
        return given
    if listen not in ("0.0.0.0", "::"):
        return listen
    name = socket.getfqdn()
    if HOST_OR_IP(name) is None and name not in ("localhost", "localhost.localdomain"):
        return name
    raise InputError("cannot tell the terminals' address for this gateway: pass "
                     "--gateway-host NAME_OR_ADDRESS", file="<command line>",
                     key="--gateway-host")


def profile_lines(public_line: str, host: str, port: int) -> str:
    return (f"kiosk:\n  host_key: \"{public_line}\"\n  gateway_host: {host}\n"
            f"  gateway_port: {port}\n")


@click.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="directory for gateway.yaml, host_key, store.db, recordings/")
@click.option("--listen", default="0.0.0.0", show_default=True, help="listen address")
@click.option("--port", default=2222, show_default=True, type=click.IntRange(1, 65535))
@click.option("--gateway-host", help="the name or address terminals connect to "
                                     "(default: the listen address, else this host's name)")
@click.option("--database", metavar="URL",
              help="postgresql://... to use a PostgreSQL store instead of DIR/store.db")
def init_cmd(directory: Path, listen: str, port: int, gateway_host: str | None,
             database: str | None) -> None:
    """Create a gateway configuration in DIR and print the terminal profile lines."""
    if IP_ADDRESS(listen):
        raise InputError(f"{listen!r} is not an IP address", file="<command line>",
                         key="--listen")
    host = _gateway_host(listen, gateway_host)
    if database is not None and not is_postgres(database):
        raise InputError(f"{database!r}: --database takes a postgresql:// URL (the default "
                         "is DIR/store.db)", file="<command line>", key="--database")
    directory = directory.absolute()
    if directory.exists() and not directory.is_dir():
        raise InputError("exists and is not a directory", file=directory, key="--dir")
    taken = [n for n in FILES if (directory / n).exists()]
    if taken:
        raise InputError(f"already holds {', '.join(taken)}; refusing to overwrite",
                         file=directory, key="--dir")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".init-", dir=directory))
    done = False
    try:
        private, public = new_host_key(f"auditbox-gateway@{host}")
        fd = os.open(stage / "host_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        (stage / "host_key.pub").write_text(public + "\n")
        (stage / "recordings").mkdir(mode=0o700)
        # the web console's HTTPS pair (served when gateway.yaml has a web: section)
        web_fingerprint = make_self_signed(stage / "web_cert.pem", stage / "web_key.pem", host)
        overrides: dict[str, object] = {"listen.address": listen, "listen.port": port}
        if database is not None:
            overrides["database"] = database
        (stage / "gateway.yaml").write_text(render_commented(overrides))
        cfg = load_config(stage / "gateway.yaml")        # what we wrote must load
        store = open_env_store(cfg.database, create=True)
        try:
            Auditor(store, actor()).log("gateway.init", listen=f"{listen}:{port}",
                                        host_key=fingerprint(public))
        finally:
            store.close()
        for name in FILES:
            if (stage / name).exists():
                os.replace(stage / name, directory / name)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done:
            shutil.rmtree(directory, ignore_errors=True)
    store_text = database_shown(database) if database else str(directory / "store.db")
    click.echo(f"wrote {directory / 'gateway.yaml'}")
    click.echo(f"wrote {directory / 'host_key'} (Ed25519, mode 0600) and host_key.pub")
    click.echo(f"store: {store_text}")
    click.echo(f"host key fingerprint: {fingerprint(public)}")
    click.echo(f"wrote {directory / 'web_cert.pem'} and web_key.pem (self-signed, for the web "
               "console: uncomment `web:` in gateway.yaml to serve it)")
    click.echo(f"web certificate fingerprint: {web_fingerprint}")
    click.echo("")
    click.echo("Set upstream.ssh or upstream.command in gateway.yaml before `serve`.")
    click.echo("Paste these lines into the terminal profile:")
    click.echo("")
    click.echo(profile_lines(public, host, port), nl=False)


def database_shown(url: str) -> str:
    from ..store.postgres import redact
    return redact(url)
