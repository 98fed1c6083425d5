"""``auditbox-attest``: the in-image attestation agent (argparse; JSON on stdout).

    auditbox-attest [--backend tpm2|soft|auto] [--state-dir DIR] enroll [--token T]
    auditbox-attest ... activate --challenge FILE     (tpm2: prints {"secret": b64})
    auditbox-attest ... quote --nonce HEX --session HEX   (prints evidence JSON)
    auditbox-attest ... info

Exit 0 on success, 1 on a backend failure, 2 on bad input.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path

from . import canonical, evidence
from .errors import AttestationError, BackendError
from .soft import SoftBackend
from .tpm2 import Tpm2Backend

Backend = SoftBackend | Tpm2Backend


def _backend(args: argparse.Namespace) -> Backend:
    choice = args.backend
    if choice == "auto":
        choice = "tpm2" if os.path.exists("/dev/tpmrm0") or os.environ.get(
            "TPM2TOOLS_TCTI") else "soft"
    base = Path(args.state_dir) if args.state_dir else None
    if choice == "tpm2":
        kw = {} if args.event_log is None else {"event_log_path": Path(args.event_log)}
        return Tpm2Backend(base / "tpm2" if base else Path("/var/lib/auditbox-attest/tpm2"),
                           ak_alg=args.ak_alg, **kw)  # type: ignore[arg-type]
    return SoftBackend(base / "soft" if base else Path("/var/lib/auditbox-attest/soft"))


def _hex(value: str, what: str, max_len: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if not raw or len(raw) > max_len:
        print(f"error: --{what}: expected 1..{max_len} bytes of hex", file=sys.stderr)
        raise SystemExit(2)
    return raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="auditbox-attest", description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("tpm2", "soft", "auto"), default="auto")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--ak-alg", choices=("ecc", "rsa"), default="ecc")
    p.add_argument("--event-log", default=None, help="event log file (tpm2)")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("enroll", help="print an enrollment request")
    e.add_argument("--token", default="", help="one-time enrollment token (soft)")
    a = sub.add_parser("activate", help="answer a tpm2 credential challenge")
    a.add_argument("--challenge", required=True, help="challenge JSON file ('-' = stdin)")
    q = sub.add_parser("quote", help="print evidence for a nonce and SSH session")
    q.add_argument("--nonce", required=True)
    q.add_argument("--session", required=True)
    sub.add_parser("info", help="print backend, device id and AK name")
    args = p.parse_args(argv)
    try:
        backend = _backend(args)
        if args.cmd == "enroll":
            if isinstance(backend, SoftBackend):
                out: object = backend.enrollment_request(args.token)
            else:
                out = backend.enrollment_request()
            print(json.dumps(out, sort_keys=True))
        elif args.cmd == "activate":
            if not isinstance(backend, Tpm2Backend):
                print("error: activate needs the tpm2 backend", file=sys.stderr)
                return 2
            data = sys.stdin.buffer.read() if args.challenge == "-" else \
                Path(args.challenge).read_bytes()
            obj = canonical.require_keys(canonical.loads(data, limit=64 * 1024),
                                         "challenge", {"credential"})
            cred = canonical.b64d(obj["credential"], "credential", 4096)
            secret = backend.activate(cred)
            print(json.dumps({"secret": base64.b64encode(secret).decode()}))
        elif args.cmd == "quote":
            nonce = _hex(args.nonce, "nonce", 64)
            session = _hex(args.session, "session", 128)
            ev = backend.quote(hashlib.sha256(nonce + session).digest())
            sys.stdout.buffer.write(evidence.encode(ev) + b"\n")
        else:
            if isinstance(backend, Tpm2Backend):
                name = backend.ak_name()
            else:
                from .soft import soft_ak_name

                name = soft_ak_name(backend.public_raw())
            print(json.dumps({"backend": backend.mode, "device_id": backend.device_id(),
                              "ak_name": name.hex()}, sort_keys=True))
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (AttestationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
