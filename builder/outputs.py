"""The build's outputs: manifest.json, signed reference.json, SHA256SUMS, qcow2; atomic OUT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attestation.reference import (
    load_or_create_build_key,
    public_key_pem,
    write_signed_reference,
)
from builder.cache import sha256_file
from builder.chroot import chroot_run
from builder.errors import InputError
from builder.progress import BuildLog
from builder.tools import ToolsTree

CHECKSUMMED = ("image.raw", "image.qcow2", "manifest.json", "reference.json",
               "reference.json.sig", "build-key.pub", "secure-boot-db.crt", "sbom.spdx.json")


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a temporary directory beside OUT; on success it replaces OUT, on failure it goes.

    An existing OUT is only replaced if it is a previous auditbox output (has manifest.json);
    anything else is the user's and is never deleted.
    """
    out = out.resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and
                                                not (out / "manifest.json").exists())):
        raise InputError("exists and is not an auditbox output directory; refusing to replace it",
                         file=out, key="-o/--output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_reference(out: Path, cache: Path, data: dict[str, Any], key_path: Path | None) -> None:
    key = load_or_create_build_key(key_path or cache / "keys" / "build-key.pem")
    write_signed_reference(out, data, key)
    (out / "build-key.pub").write_bytes(public_key_pem(key))


def write_secure_boot_cert(out: Path, cert: Path) -> None:
    """OUT/secure-boot-db.crt: the db certificate to enroll in the terminals' firmware."""
    shutil.copyfile(cert, out / "secure-boot-db.crt")
    (out / "secure-boot-db.crt").chmod(0o644)


def write_qcow2(log: BuildLog, out: Path) -> None:
    log.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", out / "image.raw",
             out / "image.qcow2"], what="qemu-img convert")


def write_sha256sums(out: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """Write OUT/SHA256SUMS; digests already computed (`known`) are not computed again."""
    known = known or {}
    sums = {name: known.get(name) or sha256_file(out / name)
            for name in CHECKSUMMED if (out / name).exists()}
    (out / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return sums


def tool_versions(log: BuildLog, tools: ToolsTree, root: Path) -> dict[str, str]:
    """Versions of every tool the build used: host, tools tree and the image's dracut."""
    versions = {}
    for tool, argv in {"mmdebstrap": ["mmdebstrap", "--version"],
                       "qemu-img": ["qemu-img", "--version"],
                       "dpkg-deb": ["dpkg-deb", "--version"]}.items():
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions[tool] = (proc.stdout or proc.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            versions[tool] = "unknown"
    for tool, argv in {"systemd-repart": ["systemd-repart", "--version"],
                       "ukify": ["ukify", "--version"],
                       "mkfs.erofs": ["mkfs.erofs", "-V"]}.items():
        versions[tool] = tools.run(argv, what=tool, capture=True,
                                   merge_stderr=True).strip().splitlines()[0]
    versions["dracut"] = chroot_run(log, root, ["dracut", "--version"], what="dracut",
                                    capture=True, merge_stderr=True).strip()
    return versions
