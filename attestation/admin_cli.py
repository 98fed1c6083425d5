"""Host admin commands (click). Mounted by the main CLI as ``attest``.

    attest verify --reference OUT/reference.json --build-key PUB --enrollment FILE \
        EVIDENCE --nonce HEX --session HEX [--allow-soft] [--no-secure-boot]
        [--update-enrollment]

Exit 0 accepted, 1 refused (``refused: <step>: <reason>``), 2 bad input. The nonce is
32 bytes (64 hex digits). ``--no-secure-boot`` accepts terminals without Secure Boot (test
set-ups with unsigned images) and says so on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import canonical
from .errors import EvidenceError, ReferenceValueError, VerificationError
from .nonces import NONCE_SIZE, NonceStore
from .policy import Policy
from .reference import load_public_key, load_reference
from .verifier import Verifier


def _hex(value: str, what: str) -> bytes:
    try:
        raw = canonical.hexd(value, f"--{what}", limit=1024)
    except EvidenceError:
        raise click.UsageError(f"--{what} is not lower-case hex") from None
    if not raw:
        raise click.UsageError(f"--{what} is empty")
    return raw


@click.group("attest")
def attest_group() -> None:
    """Attestation: verify evidence from terminals."""


@attest_group.command("verify")
@click.option("--reference", "reference", required=True, type=click.Path(path_type=Path))
@click.option("--build-key", "build_keys", required=True, multiple=True,
              type=click.Path(path_type=Path), help="trusted build public key (PEM)")
@click.option("--enrollment", required=True, type=click.Path(path_type=Path))
@click.argument("evidence_file", type=click.Path(path_type=Path))
@click.option("--nonce", required=True)
@click.option("--session", required=True)
@click.option("--allow-soft", is_flag=True, help="accept soft (TPM-less) devices")
@click.option("--no-secure-boot", is_flag=True,
              help="do not require Secure Boot (test set-ups with unsigned images only)")
@click.option("--update-enrollment", is_flag=True, help="write back last clock info")
def verify_cmd(reference: Path, build_keys: tuple[Path, ...], enrollment: Path,
               evidence_file: Path, nonce: str, session: str, allow_soft: bool,
               no_secure_boot: bool, update_enrollment: bool) -> None:
    """Verify EVIDENCE_FILE for a device enrollment against a signed reference."""
    n, s = _hex(nonce, "nonce"), _hex(session, "session")
    if len(n) != NONCE_SIZE:
        raise click.UsageError(f"--nonce must be {NONCE_SIZE} bytes ({2 * NONCE_SIZE} hex "
                               "digits)")
    try:
        keys = [load_public_key(k) for k in build_keys]
        record = canonical.loads(enrollment.read_bytes())
        ev = evidence_file.read_bytes().rstrip(b"\n")
    except (OSError, EvidenceError, ReferenceValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    nonces = NonceStore()
    nonces.add(n)
    policy = Policy(allow_soft=allow_soft, require_secure_boot=not no_secure_boot)
    for warning in policy.warnings():
        click.echo(f"warning: {warning}", err=True)
    verifier = Verifier(policy, nonces)
    try:
        verifier.add_reference(load_reference(reference, keys))
    except ReferenceValueError as exc:
        click.echo(f"refused: policy: {exc}")
        sys.exit(1)
    try:
        result = verifier.verify(ev, record, n, s)
    except VerificationError as exc:
        click.echo(f"refused: {exc.step}: {exc.reason}")
        sys.exit(1)
    if update_enrollment:
        tmp = enrollment.with_suffix(".tmp")
        tmp.write_bytes(canonical.dumps(result.record) + b"\n")
        tmp.replace(enrollment)
    click.echo(json.dumps({"accepted": True, "device_id": result.device_id,
                           "image_id": result.image_id, "mode": result.mode}, sort_keys=True))
