"""``auditbox-attest-agent``: the terminal's attestation agent as a small local service.

The kiosk runs as an unprivileged user and never touches the TPM, the event log or
the soft key. This service does, on its behalf, answering one request per connection
on a UNIX socket (``/run/auditbox-attest/agent.sock``, handed over by systemd socket
activation, mode 0660, group ``kiosk``).

Framing, both ways: a 4-byte big-endian length, then that many bytes of one canonical
JSON object (``attestation.canonical``). Requests are at most 64 KiB, answers at most
``MAX_ANSWER``. Requests (``op`` and exactly these keys):

    {"op": "info"}                                  -> device_id, mode, persistent, enrolled
    {"op": "enroll", "token": str}                  -> request (the enrollment request object)
    {"op": "activate", "credential": base64}        -> secret (base64; tpm2 only)
    {"op": "quote", "nonce": hex, "session": hex}   -> evidence (base64 of the evidence bytes)
    {"op": "mark", "enrolled": null | {"device_id", "image_id"}}
                                                    -> records (or forgets) the enrollment

Every answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": str}``. Anything else
(unknown op, unknown or missing key, oversized frame) is answered with an error and the
connection is closed. ``enrolled`` is what the kiosk shows; the gateway's registry is
the authority.

State: the soft backend's key and reset counter, and the enrollment mark, live on the
persistent state partition (``/var/lib/auditbox-state``, created by systemd-repart on
first boot); the tpm2 backend keeps its keys in the TPM and only caches public areas
under ``/run``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from . import canonical, evidence
from .errors import AttestationError, EvidenceError
from .framing import FrameError, recv_frame, send_frame
from .soft import SoftBackend
from .tpm2 import Tpm2Backend

SOCKET_PATH = Path("/run/auditbox-attest/agent.sock")
STATE_MOUNT = Path("/var/lib/auditbox-state")
TPM_CACHE = Path("/run/auditbox-attest/tpm2")
TPM_DEVICE = Path("/dev/tpmrm0")
UKI_PATHS = (Path("/efi/EFI/BOOT/BOOTX64.EFI"), Path("/boot/EFI/BOOT/BOOTX64.EFI"),
             Path("/boot/efi/EFI/BOOT/BOOTX64.EFI"))
MAX_REQUEST = 64 * 1024
MAX_ANSWER = 8 * 1024 * 1024
IO_TIMEOUT = 10.0
SD_LISTEN_FDS_START = 3

OPS: dict[str, frozenset[str]] = {
    "info": frozenset({"op"}),
    "enroll": frozenset({"op", "token"}),
    "activate": frozenset({"op", "credential"}),
    "quote": frozenset({"op", "nonce", "session"}),
    "mark": frozenset({"op", "enrolled"}),
}

Backend = SoftBackend | Tpm2Backend


class ProtocolError(Exception):
    """A request the service refuses (answered with an error)."""


# -- the service -----------------------------------------------------------------------
class Agent:
    """Answers requests with one backend; requests are served one at a time."""

    def __init__(self, backend: Backend, state_dir: Path, persistent: bool) -> None:
        self.backend = backend
        self.state_dir = state_dir
        self.persistent = persistent
        self.lock = threading.Lock()

    @property
    def mark_path(self) -> Path:
        return self.state_dir / "enrollment.json"

    def enrolled(self, device_id: str) -> dict[str, Any] | None:
        try:
            mark = canonical.loads(self.mark_path.read_bytes(), limit=4096)
            mark = canonical.require_keys(mark, "enrollment mark", {"device_id", "image_id"})
        except (OSError, EvidenceError):
            return None
        return mark if mark["device_id"] == device_id else None

    def _write_mark(self, mark: dict[str, Any] | None) -> None:
        if mark is None:
            self.mark_path.unlink(missing_ok=True)
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.mark_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(canonical.dumps(mark))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.mark_path)

    def handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict) or req.get("op") not in OPS:
            raise ProtocolError(f"unknown request (allowed ops: {', '.join(OPS)})")
        req = canonical.require_keys(req, f"request {req['op']}", set(OPS[req["op"]]))
        op = req["op"]
        b = self.backend
        with self.lock:
            if op == "info":
                dev = b.device_id()
                return {"ok": True, "device_id": dev, "mode": b.mode,
                        "persistent": self.persistent, "enrolled": self.enrolled(dev)}
            if op == "enroll":
                token = req["token"]
                if not isinstance(token, str) or len(token) > 512:
                    raise ProtocolError("token: expected a string of at most 512 characters")
                out = b.enrollment_request(token) if isinstance(b, SoftBackend) \
                    else b.enrollment_request()
                return {"ok": True, "request": out}
            if op == "activate":
                if not isinstance(b, Tpm2Backend):
                    raise ProtocolError("activate needs the tpm2 backend")
                cred = canonical.b64d(req["credential"], "credential", 4096)
                return {"ok": True, "secret": canonical.b64e(b.activate(cred))}
            if op == "quote":
                nonce = canonical.hexd(req["nonce"], "nonce", limit=64)
                session = canonical.hexd(req["session"], "session", limit=128)
                if not nonce or not session:
                    raise ProtocolError("nonce and session must not be empty")
                ev = b.quote(hashlib.sha256(nonce + session).digest())
                return {"ok": True, "evidence": base64.b64encode(evidence.encode(ev)).decode()}
            mark = req["enrolled"]
            if mark is not None:
                mark = canonical.require_keys(mark, "enrolled", {"device_id", "image_id"})
                if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in mark.values()):
                    raise ProtocolError("enrolled: device_id and image_id must be short strings")
                if mark["device_id"] != b.device_id():
                    raise ProtocolError("enrolled: not this terminal's device id")
            self._write_mark(mark)
            return {"ok": True}

    def serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        try:
            try:
                answer = self.handle(recv_frame(conn, MAX_REQUEST))
            except (ProtocolError, FrameError, AttestationError, OSError) as exc:
                answer = {"ok": False, "error": str(exc)[:1000]}
            send_frame(conn, answer)
        except (FrameError, OSError) as exc:
            print(f"auditbox-attest-agent: dropped a request: {exc}", file=sys.stderr)
        finally:
            conn.close()

    def serve(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            self.serve_one(conn)


def make_backend(choice: str, state_root: Path, tpm_cache: Path,
                 uki_paths: tuple[Path, ...] = UKI_PATHS,
                 cmdline: Path = Path("/proc/cmdline")) -> Backend:
    if choice == "auto":
        choice = "tpm2" if TPM_DEVICE.exists() or os.environ.get("TPM2TOOLS_TCTI") else "soft"
    if choice == "tpm2":
        return Tpm2Backend(tpm_cache)
    return SoftBackend(state_root / "soft", uki_paths=uki_paths, cmdline_path=cmdline)


def listening_socket(path: Path) -> socket.socket:
    """The socket systemd passed (LISTEN_FDS), or a new one bound at path."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=SD_LISTEN_FDS_START)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    os.chmod(path, 0o660)
    s.listen(8)
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="auditbox-attest-agent",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=("tpm2", "soft", "auto"), default="auto")
    p.add_argument("--socket", type=Path, default=SOCKET_PATH,
                   help="used when systemd passes no socket")
    p.add_argument("--state", type=Path, default=STATE_MOUNT,
                   help="persistent state directory (the state partition's mount point)")
    p.add_argument("--tpm-cache", type=Path, default=TPM_CACHE)
    p.add_argument("--soft-uki", type=Path, action="append", default=None,
                   help="soft backend: the UKI file(s) it measures (default: the ESP's)")
    p.add_argument("--soft-cmdline", type=Path, default=Path("/proc/cmdline"),
                   help="soft backend: the command line it measures")
    args = p.parse_args(argv)
    state_root = args.state / "attest"
    persistent = os.path.ismount(args.state)
    if persistent:          # a fresh file system's root is 0755: the agent's alone
        os.chmod(args.state, 0o700)
    backend = make_backend(args.backend, state_root, args.tpm_cache,
                           tuple(args.soft_uki) if args.soft_uki else UKI_PATHS,
                           args.soft_cmdline)
    agent = Agent(backend, state_root, persistent)
    listener = listening_socket(args.socket)
    try:   # warm up: create or read the keys before the first request needs them
        info = agent.handle({"op": "info"})
        print(json.dumps({k: info[k] for k in ("device_id", "mode", "persistent")}),
              file=sys.stderr)
    except (AttestationError, OSError, ProtocolError) as exc:
        print(f"auditbox-attest-agent: warm-up failed: {exc}", file=sys.stderr)
    agent.serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
