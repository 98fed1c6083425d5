"""Kiosk login screen (placeholder until the kiosk issue lands).

It is the kiosk user's login shell: it shows the login screen, reads credentials and
never hands out a local shell. Interrupts and end-of-file just redraw the screen.
"""

from __future__ import annotations

import getpass
import signal
import sys

BANNER = "auditbox terminal\n"


def login_once() -> None:
    sys.stdout.write(BANNER)
    user = input("login: ").strip()
    getpass.getpass("password: ")
    if user:
        sys.stdout.write("gateway connection not configured on this image\n\n")


def main() -> int:
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    while True:
        try:
            login_once()
        except (KeyboardInterrupt, EOFError):
            sys.stdout.write("\n")
