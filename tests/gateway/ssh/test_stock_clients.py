"""Tools no one here wrote: the stock OpenSSH client, and ssh-audit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kiosk import protocol
from tests.gateway.gwharness import REPO, Account, World
from tests.tools import require


def ssh_client(world: World, acc: Account, tmp: Path,
               stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run /usr/bin/ssh -tt against the gateway, answering the keyboard-interactive
    prompts through an SSH_ASKPASS script (password, then the one-time code)."""
    require(("ssh",), need_root=False)
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{world.port} {world.host_key_line}\n")
    askpass = tmp / "askpass.sh"
    askpass.write_text("#!/bin/sh\ncase \"$1\" in\n"
                       f"  *Password*) echo '{acc.password}' ;;\n"
                       f"  *code*) echo '{acc.code()}' ;;\n"
                       "  *) exit 1 ;;\nesac\n")
    askpass.chmod(0o700)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "SSH_ASKPASS": str(askpass),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["ssh", "-tt", "-F", "/dev/null", "-p", str(world.port), "-l", acc.name,
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "PreferredAuthentications=keyboard-interactive", "-o", "PubkeyAuthentication=no",
         "-o", "SendEnv=LANG", "-o", "BatchMode=no", "-o", "ConnectTimeout=10",
         "127.0.0.1"], input=stdin, capture_output=True, env=env, timeout=60)


def test_stock_ssh_logs_in_and_is_refused_at_attestation(world: World, tmp_path: Path) -> None:
    acc = world.add_user()
    r = ssh_client(world, acc, tmp_path, b"")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert protocol.ATTESTATION_REFUSAL.encode() in r.stdout
    login = world.wait_event("login.ok", acc.name)
    assert login.data["source"] == "127.0.0.1"
    deadline = time.monotonic() + 10               # the audit writes are asynchronous
    while True:
        refused = {(e.data["kind"], e.data["detail"])
                   for e in world.audit_events("channel.refused") if e.actor == acc.name}
        if {("shell", "attestation"), ("env", "LANG")} <= refused:
            break
        assert time.monotonic() < deadline, refused
        time.sleep(0.1)


def test_stock_ssh_break_glass_is_relayed_audited_and_alerted(world: World,
                                                              tmp_path: Path) -> None:
    acc = world.add_user(break_glass=True)
    r = ssh_client(world, acc, tmp_path, b"echo glass-$((40+2)); exit 0\n")
    assert r.returncode == 0, r.stderr
    assert b"glass-42" in r.stdout
    assert world.wait_event("break-glass", acc.name).data["source"].startswith("127.0.0.1:")
    start = world.wait_event("session.start", acc.name)
    assert start.data["break_glass"] is True and start.data["device_id"] is None
    with world.store() as s:
        alerts = [a for a in s.list_alerts() if a.user == acc.name]
    assert [(a.rule, a.severity) for a in alerts] == [("break-glass", "critical")]


def test_ssh_audit_finds_no_failure(world: World) -> None:
    tool = shutil.which("ssh-audit") or str(Path(sys.executable).parent / "ssh-audit")
    if not Path(tool).exists():
        require(("ssh-audit",), need_root=False)
    r = subprocess.run([tool, "-p", str(world.port), "127.0.0.1"], capture_output=True,
                       text=True, timeout=120)
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "ssh-audit-gateway.txt").write_text(out)
    assert "[fail]" not in out and r.returncode in (0, 2), out     # 2 = warnings only
    # exactly the algorithms of docs/protocol.md section 1
    algs = set(re.findall(r"^\((?:kex|key|enc|mac)\) (\S+)", out, re.M))
    assert algs == {"curve25519-sha256", "curve25519-sha256@libssh.org", "ext-info-s",
                    "kex-strict-s-v00@openssh.com", "ssh-ed25519",
                    "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
                    "aes128-gcm@openssh.com", "aes256-ctr", "aes128-ctr",
                    "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
