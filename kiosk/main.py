"""``auditbox-kiosk``: the terminal's only user interface.

Run by ``auditbox-kiosk.service`` as the unprivileged ``kiosk`` user with the console
as its standard input and output (``TTYPath=``). It never exits on its own: any error
it cannot show ends the process, and systemd starts it again at its login screen.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from .agent_client import AgentClient
from .config import CONFIG_PATH, ConfigError, KioskConfig, load
from .tty import Console, ignore_keyboard_signals


def _misconfigured(console: Console, problem: str) -> None:
    """No usable configuration: say so and wait (never a shell, never a busy loop)."""
    console.write(b"\x1b[0m\x1b[H\x1b[2J")
    console.write(("auditbox terminal\r\n\r\nThis terminal is misconfigured and cannot "
                   "connect:\r\n  " + problem[:500] + "\r\n\r\nTell the administrator.\r\n")
                  .encode("utf-8", "replace"))
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="auditbox-kiosk", description=__doc__.splitlines()[0]
                                 if __doc__ else None)
    ap.add_argument("--config", type=Path, default=CONFIG_PATH)
    args = ap.parse_args(argv)
    ignore_keyboard_signals()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        print("auditbox-kiosk: standard input is not a terminal", file=sys.stderr)
        return 2
    console = Console(fd)
    console.make_raw()
    try:
        cfg: KioskConfig = load(args.config)
    except ConfigError as exc:
        _misconfigured(console, str(exc))
        return 1
    from .app import Kiosk

    kiosk = Kiosk(cfg, console, AgentClient(cfg.agent_socket))
    try:
        kiosk.run_forever()
    finally:
        console.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
