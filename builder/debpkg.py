"""Package the project's kiosk/ and attestation/ as a real Debian package for the image."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from builder import __version__
from builder.progress import BuildLog

PACKAGE = "auditbox-terminal"
PY_DIR = "usr/lib/auditbox/python"
DEPENDS = "python3 (>= 3.11), python3-cryptography, python3-paramiko, tpm2-tools"
COMMANDS = {
    "auditbox-kiosk": ("kiosk.main", "main"),
    "auditbox-attest": ("attestation.agent_cli", "main"),
    "auditbox-attest-agent": ("attestation.agent_service", "main"),
}

WRAPPER = """#!/usr/bin/python3
import sys
sys.path.insert(0, "/{py_dir}")
from {module} import {func}
sys.exit({func}())
"""


def _copy_package(name: str, dest: Path) -> None:
    """Copy the installed package `name` (a checkout's or a wheel's) into dest."""
    source = Path(str(importlib.import_module(name).__file__)).parent
    shutil.copytree(source, dest / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


def build_deb(log: BuildLog, work: Path, source_date_epoch: int | None) -> Path:
    staging = work / "deb"
    if staging.exists():
        shutil.rmtree(staging)
    py = staging / PY_DIR
    py.mkdir(parents=True)
    for name in ("kiosk", "attestation"):
        _copy_package(name, py)
    bindir = staging / "usr/bin"
    bindir.mkdir(parents=True)
    for command, (module, func) in COMMANDS.items():
        script = bindir / command
        script.write_text(WRAPPER.format(py_dir=PY_DIR, module=module, func=func))
        script.chmod(0o755)
    control = staging / "DEBIAN"
    control.mkdir()
    (control / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {__version__}\nArchitecture: all\n"
        f"Maintainer: auditbox <auditbox@localhost>\nDepends: {DEPENDS}\n"
        "Section: admin\nPriority: optional\n"
        "Description: auditbox terminal: kiosk and attestation agent\n"
        " The only programs an auditbox terminal runs for its user.\n")
    for path in staging.rglob("*"):
        if path.is_file() and path.parent != bindir:
            path.chmod(0o644)
        elif path.is_dir():
            path.chmod(0o755)
    env = dict(os.environ)
    if source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
    deb = work / f"{PACKAGE}_{__version__}_all.deb"
    log.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", staging, deb],
            what="dpkg-deb", env=env)
    return deb
