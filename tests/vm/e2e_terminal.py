"""The test image as a laptop on the e2e gateway: boot it, enroll it and log in through
its console, as a person would (used by test_kiosk_e2e.py and tests/bench/kiosk_bench.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.gateway.gwharness import Account
from tests.images import BuiltImage
from tests.machine import Machine
from tests.tools import VM_TOOLS, require
from tests.vm.e2e_gateway import GUEST_PORT, Gateway
from tests.vm.kioskvm import F2, type_keys, wait_screen

DISK_BYTES = 1 << 30
LOGIN = r"> User name:"
PROMPT = r"(?m)[#$] *$"           # pyte pads each line with spaces
BOOT = 900.0
LOGIN_WAIT = 180.0            # TCG, a loaded machine: a quote takes seconds
# the enrollment screen's outcome: success, or one of kiosk/messages.py's failures
ENROLL_RESULT = ("This terminal is enrolled|token is unknown|Log-in failed|Cannot reach|"
                 "agent failed|Refused at|could not be verified")


def boot(image: BuiltImage, name: str, gateway: Gateway, tpm_state: Path | None) -> Machine:
    """Boot image with the gateway at 10.0.2.2:2222; tpm_state None: no TPM (soft)."""
    require(VM_TOOLS)
    m = Machine(image.image, name=name, tpm=tpm_state is not None, tpm_state=tpm_state,
                disk_bytes=DISK_BYTES, host_forwards={GUEST_PORT: gateway.port},
                extra_args=["-device", "qemu-xhci,id=xhci"])      # a USB port to plug into
    m.start()
    wait_screen(m, LOGIN, timeout=BOOT)
    m.wait_for_shell()
    return m


def device_id(m: Machine) -> str:
    shown = wait_screen(m, r"Terminal +((tpm|soft)-[0-9a-f]{32})", timeout=300)
    return next(w for w in shown.split() if w.startswith(("tpm-", "soft-")))


def enroll(m: Machine, token: str) -> str:
    """F2, the token, Enter; returns the result screen (after checking it is a success)."""
    type_keys(m, F2)
    wait_screen(m, "Enroll this terminal")
    mark = m.console_mark()
    type_keys(m, token + "\r")
    shown = wait_screen(m, ENROLL_RESULT, timeout=LOGIN_WAIT,
                        since=mark)
    assert "This terminal is enrolled" in shown, shown
    type_keys(m, "\r")
    wait_screen(m, r"Enrollment  enrolled", since=mark)
    return shown


def log_in(m: Machine, acc: Account, password: str | None = None,
           code: str | None = None) -> tuple[int, float]:
    """Type the three fields; returns (console mark, time of the Enter on the code)."""
    type_keys(m, b"\x1b")                # Esc: an empty form, the user name field first
    wait_screen(m, LOGIN)
    type_keys(m, acc.name + "\r")
    type_keys(m, (password or acc.password) + "\r")
    type_keys(m, code or acc.code())
    mark = m.console_mark()
    pressed = time.monotonic()
    type_keys(m, "\r", delay=0)
    return mark, pressed


def session(m: Machine, acc: Account) -> int:
    mark, _ = log_in(m, acc)
    wait_screen(m, PROMPT, timeout=LOGIN_WAIT, since=mark)
    return mark
