"""kiosk/gateway_link.py on the paramiko Debian 13 ships (3.5.1), and the sessions
play/export commands against a real session."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from gateway import recording
from tests.gateway.gwharness import AUDITBOX, REPO, World
from tests.gateway.ssh.test_server_session import drain, shell

TRIXIE_PARAMIKO = "3.5.1"        # python3-paramiko 3.5.1-3 in Debian 13 (trixie)
MEMBER = "./usr/lib/python3/dist-packages/paramiko/"


def _cache() -> Path:
    env = os.environ.get("AUDITBOX_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "auditbox"


def trixie_paramiko(dest: Path) -> Path:
    """Debian 13's paramiko: from a trixie tree the builder bootstrapped (the cache),
    else the same release from PyPI."""
    for tar in sorted((_cache() / "bootstrap").glob("trixie-*.tar")):
        with tarfile.open(tar) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(MEMBER)]
            if members:
                tf.extractall(dest / "debian", members=members, filter="data")
                return dest / "debian" / "usr" / "lib" / "python3" / "dist-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(dest / "pypi"), f"paramiko=={TRIXIE_PARAMIKO}"], check=True)
    return dest / "pypi"


CLIENT = textwrap.dedent("""
    import sys, time
    import paramiko
    assert paramiko.__version__ == sys.argv[1], paramiko.__version__
    from attestation.soft import SoftBackend
    from kiosk.gateway_link import BackendAgent, BadPassword, GatewayLink
    port, host_key, user, pw, code, state = sys.argv[2:8]
    t = __import__("pathlib").Path(state)
    agent = BackendAgent(SoftBackend(t / "state", boot_id_path=t / "boot_id",
                                     cmdline_path=t / "cmdline", uki_paths=(t / "uki",)))
    try:
        GatewayLink("127.0.0.1", int(port), host_key).login(user, pw + "x", "000000")
        raise SystemExit("wrong password accepted")
    except BadPassword:
        pass
    link = GatewayLink("127.0.0.1", int(port), host_key)
    link.login(user, pw, code)
    link.attest(agent)
    chan = link.open_shell("xterm", 80, 24)
    chan.send(b"echo trixie-$((6*7))\\n")
    buf = b""
    while b"trixie-42" not in buf:
        buf += chan.recv(4096)
    print("ok", paramiko.__version__, link.transport.remote_cipher, link.transport.remote_mac)
    link.close()
""")


def test_gateway_link_on_debian_13_paramiko(world: World, tmp_path: Path) -> None:
    path = trixie_paramiko(tmp_path)
    agent = world.enroll_soft("trixie")
    acc = world.add_user()
    state = world.dir / "terminals" / "trixie"
    r = subprocess.run(
        [sys.executable, "-c", CLIENT, TRIXIE_PARAMIKO, str(world.port), world.host_key_line,
         acc.name, acc.password, acc.code(), str(state)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{path}:{REPO}"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"ok {TRIXIE_PARAMIKO} aes256-gcm@openssh.com")
    assert agent.device_id.startswith("soft-")


def test_sessions_play_and_export_commands(world: World, tmp_path: Path) -> None:
    link, chan, acc = shell(world, "play")
    chan.send(b"printf 'play-\\303\\251-\\377\\n'; exit\n")
    got = drain(chan)
    link.close()
    sid = world.wait_event("session.start", acc.name).data["session"]
    world.wait_event("session.end", acc.name)
    cfg = str(world.dir / "gateway.yaml")
    play = subprocess.run([*AUDITBOX, "gateway", "sessions", "play", sid, "--speed", "1000",
                           "--config", cfg], capture_output=True, cwd=REPO, timeout=60)
    assert play.returncode == 0, play.stderr
    assert play.stdout == got                     # byte for byte what the terminal got
    out = tmp_path / "s.cast"
    exp = subprocess.run([*AUDITBOX, "gateway", "sessions", "export", sid, "-o", str(out),
                          "--config", cfg], capture_output=True, cwd=REPO, timeout=60)
    assert exp.returncode == 0, exp.stderr
    assert recording.output_bytes(out) == got
    bad = subprocess.run([*AUDITBOX, "gateway", "sessions", "play", "no-such-session",
                          "--config", cfg], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: ") and "no session 'no-such-session'" in bad.stderr


@pytest.mark.parametrize("speed", ["0", "-1", "fast"])
def test_play_refuses_a_bad_speed(world: World, speed: str) -> None:
    r = subprocess.run([*AUDITBOX, "gateway", "sessions", "play", "x", "--speed", speed,
                        "--config", str(world.dir / "gateway.yaml")], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and "speed" in r.stderr
