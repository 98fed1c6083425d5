"""The real gateway for the QEMU end-to-end tests, driven through its CLI as an admin would:
`gateway serve` on a free loopback port (the guest reaches it at 10.0.2.2:2222 through
tests/machine.py's host forwards), a real OpenSSH sshd as the harness upstream, images
registered with `gateway image add OUT/`, users with `gateway user add`, tokens with
`gateway device token create`, locks with `gateway lock`.

The gateway's host key is the test-only pair under tests/data (the test profile pins its
public half); ``other_key=True`` starts it with a fresh key instead (a gateway the terminal
must refuse).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from gateway.store import open_store
from tests.gateway.gwharness import (
    AUDITBOX,
    REPO,
    Account,
    Sshd,
    ed25519_openssh,
    free_port,
    wait_port,
)
from tests.tools import stop_process

TEST_HOST_KEY = REPO / "tests" / "data" / "gateway-host-key"
GUEST_PORT = 2222          # profiles/audit-laptop-test.yaml kiosk.gateway_port at 10.0.2.2


def upstream_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The harness: a real sshd on loopback (a module fixture of the kiosk tests)."""
    s = Sshd.start(tmp_path_factory.mktemp("upstream"))
    yield s
    s.stop()


@dataclass
class Gateway:
    dir: Path
    port: int
    sshd: Sshd
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, base: Path, sshd: Sshd, build_keys: list[Path], ek_ca_bundle: Path | None,
               extra: str = "") -> Gateway:
        d = base / "gateway"
        # init makes the store (and a host key and config, both replaced below)
        subprocess.run([*AUDITBOX, "gateway", "init", "--dir", str(d), "--gateway-host",
                        "10.0.2.2", "--port", str(GUEST_PORT)], cwd=REPO, check=True,
                       capture_output=True)
        shutil.copyfile(TEST_HOST_KEY, d / "host_key")
        (d / "host_key").chmod(0o600)
        shutil.copyfile(TEST_HOST_KEY.with_suffix(".pub"), d / "host_key.pub")
        for i, key in enumerate(build_keys):
            shutil.copyfile(key, d / f"build-key-{i}.pub")
        gw = cls(d, free_port(), sshd)
        keys = ", ".join(f"build-key-{i}.pub" for i in range(len(build_keys)))
        ek = (f"  ek_ca_bundle: {ek_ca_bundle}\n" if ek_ca_bundle
              else "  allow_ek_without_cert: true\n")
        (d / "gateway.yaml").write_text(
            f"listen:\n  address: 127.0.0.1\n  port: {gw.port}\n"
            "host_key: host_key\ndatabase: store.db\nrecordings: recordings\n"
            f"trusted_build_keys: [{keys}]\n"
            "audit:\n  journal: false\n"
            # the test image is unsigned (Secure Boot off): the development switch
            "attestation:\n  allow_soft: true\n  require_secure_boot: false\n" + ek +
            # a TPM quote under TCG on a loaded machine takes seconds, not milliseconds
            "  deadline: 120s\n  nonce_ttl: 180s\n  hello_timeout: 60s\n"
            f"upstream:\n  ssh:\n    host: 127.0.0.1\n    port: {sshd.port}\n"
            f"    host_key: \"{sshd.host_key_line}\"\n    client_key: {sshd.client_key}\n"
            + extra)
        return gw

    @property
    def config(self) -> Path:
        return self.dir / "gateway.yaml"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([*AUDITBOX, "gateway", *args, "--config", str(self.config)],
                              cwd=REPO, input=stdin, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"gateway {' '.join(args)}: {proc.returncode}\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self, other_key: bool = False) -> None:
        if other_key:
            ed25519_openssh(self.dir / "other_host_key")
            text = self.config.read_text().replace("host_key: host_key\n",
                                                   "host_key: other_host_key\n")
            (self.dir / "other.yaml").write_text(text)
        config = self.dir / ("other.yaml" if other_key else "gateway.yaml")
        with open(self.dir / "gateway.log", "ab") as log:
            self.proc = subprocess.Popen([*AUDITBOX, "gateway", "serve", "--config", str(config)],
                                         cwd=REPO, stdout=log, stderr=log)
        wait_port(self.port, self.proc, "gateway", timeout=60)

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self.proc = None

    # -- admin commands ------------------------------------------------------------------
    def add_user(self, name: str | None = None) -> Account:
        name = name or "auditor" + secrets.token_hex(3)
        password = "pw-" + secrets.token_urlsafe(12)
        out = self.cli("user", "add", name, "--upstream", "root", "--password-stdin",
                       "--no-qr", stdin=password + "\n")
        uri = next(line for line in out.splitlines() if line.startswith("otpauth://"))
        secret = parse_qs(urlparse(uri).query)["secret"][0]
        return Account(name, password, secret)

    def token(self, mode: str) -> str:
        out = self.cli("device", "token", "create", "--mode", mode).strip().splitlines()
        return out[-1].strip()

    def lock_device(self, device_id: str, reason: str) -> None:
        self.cli("lock", "--device", device_id, "--reason", reason)

    def unlock_device(self, device_id: str) -> None:
        self.cli("unlock", "--device", device_id)

    def device_show(self, device_id: str) -> str:
        return self.cli("device", "show", device_id)

    def audit(self, event: str) -> list[Any]:
        store = open_store(str(self.dir / "store.db"))
        try:
            return [e for e in store.audit_entries() if e.event == event]
        finally:
            store.close()

    def wait_audit(self, event: str, pattern: str = "", timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            hits = [e for e in self.audit(event)
                    if re.search(pattern, f"{e.actor} {e.data}")]
            if hits:
                return hits[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit entry {event} matching {pattern!r}")
            time.sleep(0.2)
