"""The kiosk on the booted test image, without a gateway: its service on ttyS0, the login
screen, keys that must not leave it, restarts, no login prompt anywhere, the attestation
agent behind its socket, and the state partition systemd-repart made on first boot."""

from __future__ import annotations

import re
import time

import pytest

from tests.machine import Machine
from tests.vm.kioskvm import CTRL, F2, kiosk_pid, screen, type_keys, wait_screen

pytestmark = pytest.mark.vm

LOGIN = r"> User name:"
PROMPTS = re.compile(r"(?m)(login: *$|^[\w.-]*@[\w.-]*:[^\n]*[#$] *$|^# *$|^\$ *$)")


@pytest.fixture(scope="module")
def kiosk(machine: Machine) -> Machine:
    machine.wait_for_unit("auditbox-kiosk.service")
    wait_screen(machine, LOGIN, timeout=300)
    return machine


def test_login_screen_shows_the_terminal_and_the_gateway(kiosk: Machine) -> None:
    shown = wait_screen(kiosk, r"Terminal +tpm-[0-9a-f]{32} +\(tpm2 attestation\)", timeout=300)
    for text in ("auditbox terminal", "AUTHORISED USE ONLY", "Enrollment",
                 "Gateway     10.0.2.2:2222", "User name:", "Password:", "One-time code:",
                 "F2 or Ctrl-E"):
        assert text in shown, text
    # /etc/issue (the legal-banner rule) is on the screen, re-wrapped
    issue = kiosk.succeed("cat /etc/issue").split()
    assert " ".join(issue[:8]) in " ".join(shown.split())


def test_keys_do_not_leave_the_login_screen(kiosk: Machine) -> None:
    pid = kiosk_pid(kiosk)
    for key in ("c", "z", "backslash", "d"):
        type_keys(kiosk, b"ab" + CTRL[key])
    type_keys(kiosk, b"\x1b~.\r\x1b")                  # Esc, an ssh escape, Enter, Esc
    time.sleep(2)
    assert kiosk_pid(kiosk) == pid
    wait_screen(kiosk, LOGIN)
    # nothing else runs on the console: only the kiosk has it open
    users = kiosk.succeed("ps -t ttyS0 -o pid=,user=,comm=").split("\n")
    assert [u.split()[:2] for u in users if u.strip()] == [[str(pid), "kiosk"]], users
    # the enrollment screen and back
    type_keys(kiosk, F2)
    wait_screen(kiosk, "Enroll this terminal")
    type_keys(kiosk, b"\x1b")
    wait_screen(kiosk, LOGIN)


def test_killing_the_kiosk_brings_back_the_login_screen(kiosk: Machine) -> None:
    restarts = int(kiosk.succeed("systemctl show -P NRestarts auditbox-kiosk.service"))
    for _ in range(6):   # faster than any start limit would allow: there is none
        mark = kiosk.console_mark()
        old = kiosk_pid(kiosk)
        kiosk.succeed("systemctl kill -s KILL auditbox-kiosk.service")
        wait_screen(kiosk, LOGIN, timeout=120, since=mark)
        assert kiosk_pid(kiosk) not in (0, old)
        assert not PROMPTS.search(screen(kiosk, since=mark))
    assert int(kiosk.succeed("systemctl show -P NRestarts auditbox-kiosk.service")) >= restarts + 6
    assert kiosk.succeed("systemctl is-active auditbox-kiosk.service").strip() == "active"


def test_no_login_prompt_on_any_console(kiosk: Machine) -> None:
    active = kiosk.succeed("systemctl list-units --no-legend --plain --state=active "
                           "'getty@*' 'serial-getty@*' 'autovt@*' 'console-getty*'")
    assert active.strip() == ""
    for unit in ("getty@tty1.service", "serial-getty@ttyS0.service", "autovt@tty2.service"):
        assert kiosk.succeed(f"systemctl is-enabled {unit} || true").strip() == "masked", unit
    tty1 = kiosk.succeed("cat /dev/vcs1 | tr -s ' '")
    assert not PROMPTS.search(tty1) and "login" not in tty1, tty1
    assert not PROMPTS.search(screen(kiosk)), screen(kiosk)
    assert "login:" not in kiosk.console_text()


def test_kiosk_unit_is_sandboxed(kiosk: Machine) -> None:
    out = kiosk.succeed("systemd-analyze security --no-pager auditbox-kiosk.service")
    print(out)
    level = float(re.search(r"Overall exposure level for auditbox-kiosk.service: ([0-9.]+)",
                            out).group(1))  # type: ignore[union-attr]
    assert level <= 2.0, out
    out = kiosk.succeed("systemctl show -p User -p TTYPath -p Restart -p StartLimitIntervalUSec "
                        "-p NoNewPrivileges auditbox-kiosk.service")
    props = dict(line.split("=", 1) for line in out.split())
    assert props == {"User": "kiosk", "TTYPath": "/dev/ttyS0", "Restart": "always",
                     "StartLimitIntervalUSec": "0", "NoNewPrivileges": "yes"}, props
    assert "-isig" in kiosk.succeed("stty -a -F /dev/ttyS0").split()


def test_agent_answers_the_kiosk_user_only(kiosk: Machine) -> None:
    probe = ("python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); "
             "s.connect(\"/run/auditbox-attest/agent.sock\"); print(\"connected\")'")
    assert "connected" in kiosk.succeed(f"setpriv --reuid=kiosk --regid=kiosk --init-groups "
                                        f"{probe}")
    denied = kiosk.fail(f"setpriv --reuid=nobody --regid=nogroup --clear-groups {probe}")
    assert "Permission denied" in denied
    out = kiosk.succeed("systemd-analyze security --no-pager auditbox-attest-agent.service "
                        "| tail -n1")
    print(out)
    assert float(re.search(r"level for auditbox-attest-agent.service: ([0-9.]+)",
                           out).group(1)) <= 2.0  # type: ignore[union-attr]


def test_state_partition_made_on_first_boot(kiosk: Machine) -> None:
    mount = kiosk.succeed("findmnt -no SOURCE,FSTYPE,OPTIONS /var/lib/auditbox-state").split()
    assert mount[1] == "ext4" and {"nosuid", "nodev", "noexec"} <= set(mount[2].split(","))
    label = kiosk.succeed(f"lsblk -no PARTLABEL {mount[0]}").strip()
    assert label == "auditbox-state"
    assert "systemd-repart" in kiosk.succeed("journalctl -b -u systemd-repart --no-pager")
    # the rest stays as it was: root read-only under verity, /var a tmpfs
    assert kiosk.succeed("findmnt -no FSTYPE /").strip() == "erofs"
    assert kiosk.succeed("findmnt -no FSTYPE /var").strip() == "tmpfs"
    assert kiosk.succeed("stat -c %a /var/lib/auditbox-state").strip() == "700"
