"""The auditor's whole journey, end to end: the test image in QEMU (kiosk on ttyS0, the
gateway at 10.0.2.2:2222 pinned by its host key), the real gateway and a real OpenSSH
upstream on this machine's loopback. Everything is typed on the console and read off it.

tpm2 (swtpm, with an EK certificate from a local CA the gateway trusts): enroll with a
token typed on the console; user name, password, code; a command runs on the upstream and
its output shows; `exit` returns; wrong password and wrong code; escapes and control keys;
a lock shows within 2 s; killing the kiosk mid-session; a gateway with another host key is
refused; a reboot logs in without enrolling; a rebuilt image with another command line on
the same TPM (a re-flash) is refused at attestation, step policy. soft (no TPM): enroll,
reboot, log in again from the state partition.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attestation.swtpm_ca import EkCa, make_ca, manufacture
from tests.gateway.gwharness import Account, Sshd
from tests.images import BuiltImage
from tests.machine import Machine
from tests.tools import require
from tests.vm.e2e_gateway import Gateway, upstream_sshd
from tests.vm.e2e_terminal import (
    BOOT,
    ENROLL_RESULT,
    LOGIN,
    LOGIN_WAIT,
    PROMPT,
    boot,
    device_id,
    enroll,
    log_in,
    session,
)
from tests.vm.kioskvm import CTRL, F2, capture, kiosk_pid, screen, type_keys, wait_screen

pytestmark = pytest.mark.vm



# -- fixtures ----------------------------------------------------------------------------
upstream = pytest.fixture(scope="module", name="upstream")(upstream_sshd)


@pytest.fixture(scope="module")
def ek_ca(tmp_path_factory: pytest.TempPathFactory) -> EkCa:
    require(("swtpm_setup", "swtpm_localca"))
    return make_ca(tmp_path_factory.mktemp("ekca"))


@pytest.fixture(scope="module")
def gateway(test_image: BuiltImage, upstream: Sshd, ek_ca: EkCa,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway.create(tmp_path_factory.mktemp("e2e"), upstream,
                        [test_image.out / "build-key.pub"], ek_ca.bundle)
    print(gw.cli("image", "add", str(test_image.out)))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tpm_state(ek_ca: EkCa, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The laptop's TPM, kept across boots and images (manufactured with an EK cert)."""
    state = tmp_path_factory.mktemp("laptop-tpm") / "tpm"
    manufacture(state, ek_ca)
    return state


@pytest.fixture(scope="module")
def laptop(test_image: BuiltImage, gateway: Gateway, tpm_state: Path) -> Iterator[Machine]:
    m = boot(test_image, "e2e-tpm2", gateway, tpm_state)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def auditor(gateway: Gateway) -> Account:
    return gateway.add_user()


# -- helpers -------------------------------------------------------------------------------
def remote(m: Machine, line: str, expect: str, since: int | None = None) -> str:
    mark = m.console_mark() if since is None else since
    type_keys(m, line + "\r")
    return wait_screen(m, expect, timeout=60, since=mark)


# -- tpm2 ----------------------------------------------------------------------------------
def test_enroll_with_a_token_typed_on_the_console(laptop: Machine, gateway: Gateway) -> None:
    dev = device_id(laptop)
    wait_screen(laptop, "Gateway +10.0.2.2:2222  reachable")
    assert "not confirmed on this disk" in capture(laptop, "login-screen")
    token = gateway.token("tpm2")
    type_keys(laptop, F2)
    wait_screen(laptop, "Enroll this terminal")
    type_keys(laptop, token)
    capture(laptop, "enroll")
    mark = laptop.console_mark()
    type_keys(laptop, "\r")
    shown = wait_screen(laptop, ENROLL_RESULT, timeout=LOGIN_WAIT,
                        since=mark)
    capture(laptop, "enrolled")
    assert "This terminal is enrolled" in shown, shown
    assert dev in shown and "(tpm2)" in shown
    type_keys(laptop, "\r")
    wait_screen(laptop, r"Enrollment  enrolled", since=mark)
    assert "active" in gateway.device_show(dev)


def test_login_runs_a_command_on_the_upstream(laptop: Machine, auditor: Account,
                                              gateway: Gateway) -> None:
    mark = session(laptop, auditor)
    marker = secrets.token_hex(6)
    shown = remote(laptop, f"touch /tmp/auditbox-e2e-{marker}; echo out-$((6*7))-{marker}",
                   f"out-42-{marker}", since=mark)
    assert Path(f"/tmp/auditbox-e2e-{marker}").exists(), "the command did not run upstream"
    Path(f"/tmp/auditbox-e2e-{marker}").unlink()
    print(capture(laptop, "session", since=mark))
    exit_mark = laptop.console_mark()
    type_keys(laptop, "exit\r")
    shown = wait_screen(laptop, "Session ended", since=exit_mark, timeout=60)
    capture(laptop, "session-ended")
    assert LOGIN in shown
    gateway.wait_audit("session.end", auditor.name)


def test_usb_keyboard_during_a_session_is_shown_and_reported(laptop: Machine, auditor: Account,
                                                             gateway: Gateway) -> None:
    session(laptop, auditor)
    mark = laptop.console_mark()
    laptop.qmp("device_add", driver="usb-kbd", id="e2e-kbd", bus="xhci.0")
    try:
        laptop.wait_for_console_text("a USB keyboard was connected", timeout=60, since=mark)
        alert = gateway.wait_audit("terminal.alert", "usb-keyboard")
        print(alert.data)
    finally:
        laptop.qmp("device_del", id="e2e-kbd")
    m2 = laptop.console_mark()
    type_keys(laptop, "exit\r")
    wait_screen(laptop, "Session ended", since=m2, timeout=60)


def test_wrong_password_and_wrong_code(laptop: Machine, auditor: Account) -> None:
    # the refusal may come while the code is still being typed (it is drawn then): look
    # from before the form (log_in's Esc clears any earlier message)
    mark = laptop.console_mark()
    log_in(laptop, auditor, password="not-" + auditor.password)
    wait_screen(laptop, "Wrong user name or password", timeout=LOGIN_WAIT, since=mark)
    capture(laptop, "wrong-password")
    mark, _ = log_in(laptop, auditor, code="000000")     # right once in a million
    wait_screen(laptop, "Wrong or expired one-time code", timeout=LOGIN_WAIT, since=mark)


def test_keys_reach_the_session_and_never_the_terminal(laptop: Machine,
                                                       auditor: Account) -> None:
    pid = kiosk_pid(laptop)
    # at every field of the login screen: nothing leaves it
    type_keys(laptop, b"\x1b")                    # an empty form (an earlier test left one)
    wait_screen(laptop, LOGIN)
    for field_text in ("", "someone\r", "password\r"):
        type_keys(laptop, field_text)
        for key in ("c", "z", "backslash", "d"):
            type_keys(laptop, CTRL[key])
    type_keys(laptop, b"\x1b")                    # Esc clears the form
    assert kiosk_pid(laptop) == pid
    wait_screen(laptop, LOGIN)
    mark = session(laptop, auditor)
    # in the session every key is the remote side's
    remote(laptop, "sleep 300", "sleep 300", since=mark)
    m2 = laptop.console_mark()
    type_keys(laptop, CTRL["c"])                  # interrupts the remote sleep
    wait_screen(laptop, PROMPT, since=m2, timeout=30)
    remote(laptop, "sleep 301", "sleep 301")
    m3 = laptop.console_mark()
    type_keys(laptop, CTRL["z"])                  # stops it, remotely
    wait_screen(laptop, r"Stopped", since=m3, timeout=30)
    remote(laptop, "kill -9 %1; sleep 302", "sleep 302")
    m4 = laptop.console_mark()
    type_keys(laptop, CTRL["backslash"])          # SIGQUIT for the remote sleep
    wait_screen(laptop, r"Quit", since=m4, timeout=30)
    remote(laptop, "~.", r"~\.: command not found")       # no client escape: plain input
    m5 = laptop.console_mark()
    type_keys(laptop, "cat\r")
    type_keys(laptop, CTRL["d"])                  # ends cat's input, not the session
    remote(laptop, "echo still-$((40+2))", "still-42", since=m5)
    assert kiosk_pid(laptop) == pid
    assert laptop.succeed("ps -t ttyS0 -o user= | sort -u").split() == ["kiosk"]
    # Ctrl-D at the shell's own prompt ends the remote shell: back to the login screen
    m6 = laptop.console_mark()
    type_keys(laptop, CTRL["d"])
    wait_screen(laptop, "Session ended", since=m6, timeout=60)
    assert kiosk_pid(laptop) == pid


def test_lock_reaches_the_console_within_2s(laptop: Machine, auditor: Account,
                                            gateway: Gateway) -> None:
    dev = device_id(laptop)
    session(laptop, auditor)
    mark = laptop.console_mark()
    started = time.time()
    gateway.lock_device(dev, "E2E: audit paused by the lab")
    laptop.wait_for_console_text("has been locked", timeout=30, since=mark)
    seen = time.time()
    committed = gateway.wait_audit("lock.add", dev).at
    print(f"lock: on the console {seen - committed:.2f} s after it was committed "
          f"({seen - started:.2f} s after `auditbox gateway lock` started)")
    shown = wait_screen(laptop, "E2E: audit paused by the lab", since=mark)
    capture(laptop, "locked")
    assert "This terminal has been locked" in shown
    assert seen - committed < 2.0
    # refused while locked, with the message; then unlocked
    type_keys(laptop, "\r")
    mark, _ = log_in(laptop, auditor)
    wait_screen(laptop, "audit paused by the lab", timeout=LOGIN_WAIT, since=mark)
    type_keys(laptop, "\r")
    gateway.unlock_device(dev)


def test_killing_the_kiosk_mid_session_brings_back_the_login_screen(
        laptop: Machine, auditor: Account, gateway: Gateway) -> None:
    type_keys(laptop, b"\x1b")
    wait_screen(laptop, LOGIN)
    session(laptop, auditor)
    mark = laptop.console_mark()
    laptop.succeed("systemctl kill -s KILL auditbox-kiosk.service")
    shown = wait_screen(laptop, LOGIN, timeout=120, since=mark)
    assert "#" not in shown.split("User name")[0][-200:]
    gateway.wait_audit("session.end", auditor.name)


def test_gateway_with_another_host_key_is_refused(laptop: Machine, auditor: Account,
                                                  gateway: Gateway) -> None:
    gateway.stop()
    gateway.start(other_key=True)
    try:
        type_keys(laptop, b"\x1b")
        mark = laptop.console_mark()
        type_keys(laptop, auditor.name + "\r")   # the kiosk connects once it has a user name
        shown = wait_screen(laptop, "could not be verified", timeout=LOGIN_WAIT, since=mark)
        capture(laptop, "host-key-refused")
        assert "refused" in shown and "SHA256:" in shown
        type_keys(laptop, "\r")
        wait_screen(laptop, "REFUSED: wrong host key", since=mark)
    finally:
        gateway.stop()
        gateway.start()


def test_reboot_logs_in_without_enrolling(laptop: Machine, auditor: Account) -> None:
    mark = laptop.console_mark()
    laptop.execute("systemctl reboot --no-block", timeout=60)
    laptop._shell_ready = False
    wait_screen(laptop, r"Enrollment  enrolled", timeout=BOOT, since=mark)
    laptop.wait_for_shell()
    mark = session(laptop, auditor)
    remote(laptop, "echo again-$((6*7))", "again-42", since=mark)
    type_keys(laptop, "exit\r")
    wait_screen(laptop, "Session ended", since=mark, timeout=60)


def test_changed_command_line_is_refused_at_attestation(
        laptop: Machine, variant_image: BuiltImage, gateway: Gateway, tpm_state: Path,
        auditor: Account) -> None:
    """The same laptop (its TPM) re-flashed with a rebuilt image: it is still enrolled
    (the refusal is not at step enrollment) but its boot is not the enrolled image's."""
    laptop.stop()                  # one swtpm per TPM state
    m = boot(variant_image, "e2e-variant", gateway, tpm_state)
    try:
        assert "auditbox.variant=1" in m.succeed("cat /proc/cmdline")
        mark, _ = log_in(m, auditor)
        shown = wait_screen(m, r"Refused at attestation \(step: \w+\)", timeout=LOGIN_WAIT,
                            since=mark)
        print(capture(m, "refused-policy"))
        assert "Refused at attestation (step: policy)" in shown
    finally:
        m.stop()


# -- soft ----------------------------------------------------------------------------------
def test_soft_enroll_reboot_login(test_image: BuiltImage, gateway: Gateway) -> None:
    m = boot(test_image, "e2e-soft", gateway, None)
    try:
        dev = device_id(m)
        assert dev.startswith("soft-") and "NOT ENROLLED" in screen(m)
        enroll(m, gateway.token("soft"))
        acc = gateway.add_user()
        mark = session(m, acc)
        remote(m, "echo soft-$((6*7))", "soft-42", since=mark)
        type_keys(m, "exit\r")
        wait_screen(m, "Session ended", since=mark, timeout=60)
        assert "/var/lib/auditbox-state" in m.succeed("findmnt -no TARGET /dev/disk/by-partlabel/"
                                                      "auditbox-state")
        mark = m.console_mark()
        m.execute("systemctl reboot --no-block", timeout=60)
        m._shell_ready = False
        wait_screen(m, r"Enrollment  enrolled", timeout=BOOT, since=mark)
        assert device_id(m) == dev
        mark = session(m, acc)
        remote(m, "echo soft-again", "soft-again", since=mark)
    finally:
        m.stop()
