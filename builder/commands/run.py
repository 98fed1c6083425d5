"""`auditbox run IMAGE [--tpm/--no-tpm] [--serial SOCKET] [--qmp SOCKET] [--memory MB]`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from builder.qemu import STOP_SIGNALS, VMConfig, run_foreground


@click.command("run")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--tpm/--no-tpm", default=True, show_default=True,
              help="Attach a software TPM 2.0 (swtpm, started and stopped with the VM).")
@click.option("--serial", type=click.Path(path_type=Path), default=None,
              help="Put the first serial port (console) on this UNIX socket, not stdio.")
@click.option("--serial2", type=click.Path(path_type=Path), default=None,
              help="Second serial port (ttyS1) on this UNIX socket (test images' root shell).")
@click.option("--qmp", type=click.Path(path_type=Path), default=None,
              help="QMP control socket.")
@click.option("--memory", type=click.IntRange(256, 65536), default=2048, show_default=True,
              help="Guest memory in MiB.")
@click.option("--hostfwd", multiple=True, help="User-net forward, e.g. tcp:127.0.0.1:2222-:22.")
def run_cmd(image: Path, tpm: bool, serial: Path | None, serial2: Path | None, qmp: Path | None,
            memory: int, hostfwd: tuple[str, ...]) -> None:
    """Boot IMAGE under QEMU (TCG, q35, OVMF, swtpm); console on stdio by default.

    The guest powering off, Ctrl-C, SIGTERM or SIGHUP stops QEMU and swtpm; a stop by
    signal exits 0.
    """
    serials = [str(serial) if serial else "stdio"]
    if serial2:
        serials.append(str(serial2))
    code = run_foreground(VMConfig(image=image, tpm=tpm, serials=serials, qmp=qmp,
                                   memory_mb=memory, hostfwd=list(hostfwd)))
    sys.exit(0 if code == 0 or code - 128 in STOP_SIGNALS else code)
