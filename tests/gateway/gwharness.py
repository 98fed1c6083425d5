"""A real OpenSSH sshd upstream and a real gateway process, for the SSH-side tests.

``Sshd.start(dir)``: /usr/sbin/sshd on a free loopback port with its own config,
Ed25519 host key and authorized key (the gateway's client key); logs in as the
current (root) account. ``World``: a gateway directory (gateway.yaml, host key,
store, a registered soft image signed by a build key), users with password + TOTP,
enrollment tokens, soft terminals; ``World.start()`` runs ``serve`` in a child
process and waits until it listens. Both are real servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.reference import write_signed_reference
from attestation.soft import SoftBackend
from gateway import enrollment, images, passwords, totp
from gateway.audit import Auditor
from gateway.config import load_config
from gateway.store import open_store
from gateway.store.base import Store, User
from kiosk.gateway_link import BackendAgent, GatewayLink
from tests.attestation.attest_helpers import CMDLINE, reference_data
from tests.tools import require, stop_process

REPO = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
UKI = b"uki-file"                                     # reference_data's uki_sha256
AUDITBOX = [sys.executable, "-m", "builder.cli"]      # this checkout's `auditbox`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ed25519_openssh(path: Path) -> str:
    """Write an Ed25519 private key (OpenSSH format, 0600); return its public line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def wait_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}") from None
            time.sleep(0.05)


@dataclass
class Sshd:
    dir: Path
    port: int
    host_key_line: str
    client_key: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, base: Path, extra: str = "") -> Sshd:
        require(("sshd",), need_root=True)
        d = base / "sshd"
        d.mkdir(parents=True)
        host_line = ed25519_openssh(d / "host_key")
        client_line = ed25519_openssh(d / "client_key")
        (d / "authorized_keys").write_text(client_line + "\n")
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n"
            "PrintMotd no\nPrintLastLog no\nAllowTcpForwarding no\nX11Forwarding no\n"
            "AllowAgentForwarding no\nPermitUserEnvironment no\nLogLevel ERROR\n"
            "AcceptEnv none\n" + extra)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(d / "sshd.log", "wb") as log:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                    stdout=subprocess.DEVNULL, stderr=log)
        wait_port(port, proc, "sshd")
        return cls(d, port, host_line, d / "client_key", proc)

    def stop(self) -> None:
        stop_process(self.proc, 5)


@dataclass
class Account:
    name: str
    password: str
    secret: str
    step: int = 0          # last TOTP step used by the tests

    def code(self) -> str:
        """The next unused code: one of the steps the gateway accepts now (window 1)."""
        now = totp.step_of(time.time())
        step = max(self.step + 1, now)
        if step > now + 1:
            time.sleep((step - 1) * 30 - time.time() + 0.5)
        self.step = step
        return totp.code_at(self.secret, step)


@dataclass
class World:
    dir: Path
    sshd: Sshd | None
    database: str
    port: int = 0
    host_key_line: str = ""
    build_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    proc: subprocess.Popen[bytes] | None = None
    extra: str = ""
    replica: str = "test-replica"

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    def create(cls, base: Path, sshd: Sshd | None, database: str | None = None,
               extra: str = "", command: list[str] | None = None) -> World:
        d = base / "gw"
        d.mkdir(parents=True)
        w = cls(d, sshd, database or str(d / "store.db"), extra=extra)
        w.host_key_line = ed25519_openssh(d / "host_key")
        (d / "build-key.pub").write_bytes(w.build_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        w.port = free_port()
        w.write_config(extra, command)
        img = d / "image"
        img.mkdir()
        # the synthetic image of the attestation tests: its UKI is UKI (soft terminals
        # measure it) and tests/attestation's build_log() boots it (tpm2 through swtpm)
        write_signed_reference(img, reference_data(image_id="img-test"), w.build_key)
        with w.store() as s:
            images.add_image(s, Auditor(s, "test"), img, [w.build_key.public_key()], "test")
        return w

    def write_config(self, extra: str = "", command: list[str] | None = None) -> None:
        if command is not None:
            upstream = "upstream:\n  command: [" + ", ".join(f'"{a}"' for a in command) + "]\n"
        else:
            assert self.sshd is not None
            upstream = (f"upstream:\n  ssh:\n    host: 127.0.0.1\n    port: {self.sshd.port}\n"
                        f"    host_key: \"{self.sshd.host_key_line}\"\n"
                        f"    client_key: {self.sshd.client_key}\n")
        (self.dir / "gateway.yaml").write_text(
            f"listen:\n  address: 127.0.0.1\n  port: {self.port}\n"
            f"host_key: host_key\ndatabase: \"{self.database}\"\nrecordings: recordings\n"
            f"replica: {self.replica}\ntrusted_build_keys: [build-key.pub]\n"
            "audit:\n  journal: false\n" + upstream + extra)

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        s = open_store(self.database)
        try:
            yield s
        finally:
            s.close()

    def config(self) -> Any:
        return load_config(self.dir / "gateway.yaml")

    def add_user(self, name: str | None = None, break_glass: bool = False,
                 upstream_user: str | None = None) -> Account:
        name = name or "u" + secrets.token_hex(4)
        pw = "pw-" + secrets.token_urlsafe(12)
        secret = totp.new_secret()
        with self.store() as s:
            s.add_user(User(name, passwords.hash_password(pw), secret,
                            upstream_user or getpass.getuser(), break_glass=break_glass,
                            created_at=time.time()))
        return Account(name, pw, secret)

    def token(self, mode: str = "soft", ttl: float = 3600) -> str:
        with self.store() as s:
            text, _ = enrollment.create_token(s, Auditor(s, "test"), mode, ttl, "test")
        return text

    def soft_backend(self, name: str = "t1") -> SoftBackend:
        t = self.dir / "terminals" / name
        t.mkdir(parents=True, exist_ok=True)
        (t / "boot_id").write_text("boot-1\n")
        (t / "cmdline").write_text(CMDLINE + "\n")
        (t / "uki").write_bytes(UKI)
        return SoftBackend(t / "state", boot_id_path=t / "boot_id", cmdline_path=t / "cmdline",
                           uki_paths=(t / "uki",))

    # -- the gateway process ----------------------------------------------------------------
    def start(self) -> None:
        with open(self.dir / "gateway.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*AUDITBOX, "gateway", "serve", "--config", str(self.dir / "gateway.yaml")],
                cwd=REPO, stdout=log, stderr=log,
                env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_port(self.port, self.proc, "gateway")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, 10, sig)
        self.proc = None

    def log_text(self) -> str:
        p = self.dir / "gateway.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- clients ------------------------------------------------------------------------------
    def link(self) -> GatewayLink:
        return GatewayLink("127.0.0.1", self.port, self.host_key_line, timeout=15)

    def enroll_soft(self, name: str = "t1") -> BackendAgent:
        agent = BackendAgent(self.soft_backend(name))
        token = self.token("soft")
        link = self.link()
        link.enroll_login(token)
        link.enroll(agent, token)
        link.close()
        return agent

    def attested_shell(self, name: str) -> tuple[GatewayLink, Any, Account]:
        """Soft terminal ``name`` enrolled, a new user logged in and attested, and a shell
        that has answered: (link, channel, account)."""
        agent = self.enroll_soft(name)
        acc = self.add_user()
        link = self.link()
        link.login(acc.name, acc.password, acc.code())
        link.attest(agent)
        chan = link.open_shell()
        chan.send(b"echo shell-$((40+2))\n")
        read_until(chan, b"shell-42")
        return link, chan, acc

    def wait_event(self, event: str, actor: str | None = None,
                   timeout: float = 10) -> Any:
        """The newest audit entry ``event`` (of ``actor``), waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.audit_events(event) if actor is None or e.actor == actor]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit entry {event} for {actor}")
            time.sleep(0.1)

    def audit_events(self, event: str | None = None) -> list[Any]:
        with self.store() as s:
            return [e for e in s.audit_entries() if event is None or e.event == event]


def read_until(chan: paramiko.Channel, marker: bytes, timeout: float = 15) -> bytes:
    chan.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen; got {buf[-300:]!r}")
        data = chan.recv(65536)
        if not data:
            raise AssertionError(f"channel closed before {marker!r}; got {buf[-300:]!r}")
        buf += data
    return buf


def have_sshd() -> bool:
    return shutil.which("sshd") is not None or Path(SSHD).exists()


def fresh_world(base: Path, sshd: Sshd, extra: str = "", database: str | None = None,
                command: list[str] | None = None) -> World:
    """A started gateway allowing soft terminals. Tests type whole command lines in one
    packet, which the keystroke rules rightly take for an injector: unless ``extra``
    sets ``anomaly``, no anomaly rules are configured (test_server_session tests them)."""
    if "anomaly:" not in extra:
        extra += "anomaly:\n  rules: []\n"
    # swtpm has no EK certificate: tpm2 terminals are enrolled as allowed-without
    w = World.create(base, sshd, database=database, command=command,
                     extra="attestation:\n  allow_soft: true\n  allow_ek_without_cert: true\n"
                           + extra)
    w.start()
    return w
