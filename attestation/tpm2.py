"""TPM 2.0 backend of the agent, driving the TPM through tpm2-tools.

Every call is a subprocess with an argument list (no shell). The TCTI comes from
``TPM2TOOLS_TCTI`` (default: the tools' own default, /dev/tpmrm0). Keys:

* EK: RSA-2048, default TCG template (``tpm2_createek -G rsa``), persisted at
  ``ek_handle`` (0x81010001 by default) or reused if already there.
* AK: restricted signing key under the EK (``tpm2_createak``), ECC P-256/ECDSA or
  RSA-2048/RSASSA, sha256, persisted at ``ak_handle`` (0x81010002) or reused.
* EK certificate: read from NV index 0x01c00002 (TCG: RSA-2048 EK certificate) when the
  TPM has one, and sent with the enrollment request (null otherwise).

Quotes cover ``DEFAULT_PCRS``: 0-9, 11, 12 and 13 (see ``attestation.policy``).

Public areas are cached in the state directory as ek.pub / ak.pub (TPM2B_PUBLIC).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from .ekcert import trim_der
from .errors import BackendError, EvidenceError
from .evidence import Evidence
from .tpm_structs import (
    TPM_ALG_SHA256,
    parse_attest,
    parse_tpm2b_public,
    pcr_digest,
)

DEFAULT_STATE_DIR = Path("/var/lib/auditbox-attest/tpm2")
DEFAULT_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13)
EK_HANDLE = 0x81010001
EK_CERT_NV_INDEX = 0x01C00002
AK_HANDLE = 0x81010002
TOOL_TIMEOUT = 60


def tpm_device_id(ek_public: bytes) -> str:
    """Device id derived from the EK: ``tpm-`` + 32 hex chars of SHA256(EK TPMT_PUBLIC)."""
    return "tpm-" + ek_hash(ek_public)[:32]


def ek_hash(ek_public: bytes) -> str:
    """SHA256 (hex) over the EK's TPMT_PUBLIC area."""
    return hashlib.sha256(parse_tpm2b_public(ek_public).area).hexdigest()


class Tpm2Backend:
    mode = "tpm2"

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        tcti: str | None = None,
        ek_handle: int = EK_HANDLE,
        ak_handle: int = AK_HANDLE,
        ak_alg: str = "ecc",
        event_log_path: Path = DEFAULT_EVENT_LOG,
        device_id: str | None = None,
    ) -> None:
        if ak_alg not in ("ecc", "rsa"):
            raise BackendError(f"unsupported AK algorithm {ak_alg!r} (ecc or rsa)")
        self.state_dir = Path(state_dir)
        self.tcti = tcti
        self.ek_handle = ek_handle
        self.ak_handle = ak_handle
        self.ak_alg = ak_alg
        self.event_log_path = event_log_path
        self._device_id = device_id

    # -- plumbing ---------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.tcti:
            env["TPM2TOOLS_TCTI"] = self.tcti
        return env

    def run(self, *args: str) -> bytes:
        try:
            proc = subprocess.run(
                list(args), env=self._env(), capture_output=True, timeout=TOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{args[0]}: {exc}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise BackendError(f"{args[0]} failed ({proc.returncode}): {' | '.join(err[-3:])}")
        return proc.stdout

    def _persistent(self) -> set[int]:
        out = self.run("tpm2_getcap", "handles-persistent").decode()
        handles: set[int] = set()
        for line in out.splitlines():
            line = line.strip().lstrip("-").strip()
            if line.startswith("0x"):
                handles.add(int(line, 16))
        return handles

    def _state(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.state_dir

    # -- keys -------------------------------------------------------------------
    def ensure_keys(self) -> tuple[bytes, bytes]:
        """Create (or reuse) the EK and AK; return (EK TPM2B_PUBLIC, AK TPM2B_PUBLIC)."""
        st = self._state()
        persistent = self._persistent()
        ek_pub, ak_pub = st / "ek.pub", st / "ak.pub"
        if self.ek_handle not in persistent:
            try:
                self.run("tpm2_createek", "-c", hex(self.ek_handle), "-G", "rsa",
                         "-u", str(ek_pub), "-f", "tss")
            except BackendError:
                # another process (the agent service and `auditbox-attest enroll` on one
                # boot) persisted it first: use that one
                if self.ek_handle not in self._persistent():
                    raise
                self._read_public(self.ek_handle, ek_pub)
        else:
            self._read_public(self.ek_handle, ek_pub)
        if self.ak_handle not in persistent:
            with tempfile.TemporaryDirectory(dir=st) as tmp:
                ctx = os.path.join(tmp, "ak.ctx")
                alg = ["-G", "ecc", "-s", "ecdsa"] if self.ak_alg == "ecc" else \
                    ["-G", "rsa", "-s", "rsassa"]
                try:
                    self.run("tpm2_createak", "-C", hex(self.ek_handle), "-c", ctx, *alg,
                             "-g", "sha256", "-u", str(ak_pub), "-n", os.path.join(tmp, "n"),
                             "-r", os.path.join(tmp, "priv"), "-f", "tss")
                    self.run("tpm2_evictcontrol", "-C", "o", "-c", ctx, hex(self.ak_handle))
                    made = True
                except BackendError:
                    if self.ak_handle not in self._persistent():
                        raise
                    made = False             # persisted by another process meanwhile
                finally:
                    self._flush("-t")
                    self._flush("-s")
            if not made:
                self._read_public(self.ak_handle, ak_pub)
        else:
            self._read_public(self.ak_handle, ak_pub)
        return ek_pub.read_bytes(), ak_pub.read_bytes()

    def _read_public(self, handle: int, out: Path) -> None:
        self.run("tpm2_readpublic", "-c", hex(handle), "-o", str(out), "-f", "tss")

    def _flush(self, which: str) -> None:
        with contextlib.suppress(BackendError):
            self.run("tpm2_flushcontext", which)

    def _publics(self) -> tuple[bytes, bytes]:
        st = self.state_dir
        try:
            return (st / "ek.pub").read_bytes(), (st / "ak.pub").read_bytes()
        except OSError:
            return self.ensure_keys()

    def device_id(self) -> str:
        return self._device_id or tpm_device_id(self._publics()[0])

    def ak_name(self) -> bytes:
        return parse_tpm2b_public(self._publics()[1]).name

    def ek_certificate(self) -> bytes | None:
        """The RSA EK certificate from NV (DER, NV padding dropped), or None if absent."""
        out = self.run("tpm2_nvreadpublic").decode(errors="replace")
        if not any(line.strip().rstrip(":").lower() in ("0x1c00002", "0x01c00002")
                   for line in out.splitlines()):
            return None
        with tempfile.TemporaryDirectory(dir=self._state()) as tmp:
            path = os.path.join(tmp, "ek.der")
            self.run("tpm2_nvread", f"0x{EK_CERT_NV_INDEX:08x}", "-C", "o", "-o", path)
            with open(path, "rb") as f:
                return trim_der(f.read())

    def enrollment_request(self) -> dict[str, object]:
        from .canonical import b64e

        ek, ak = self.ensure_keys()
        cert = self.ek_certificate()
        try:
            name = parse_tpm2b_public(ak).name
            dev = self._device_id or tpm_device_id(ek)
        except EvidenceError as exc:
            raise BackendError(f"TPM returned an unparsable public area: {exc}") from None
        return {
            "format": 1,
            "mode": "tpm2",
            "device_id": dev,
            "ek_public": b64e(ek),
            "ek_cert": None if cert is None else b64e(cert),
            "ak_public": b64e(ak),
            "ak_name": name.hex(),
        }

    def activate(self, credential_file: bytes) -> bytes:
        """TPM2_ActivateCredential on a tpm2-tools credential file; returns the secret."""
        st = self._state()
        with tempfile.TemporaryDirectory(dir=st) as tmp:
            cred = os.path.join(tmp, "cred.bin")
            out = os.path.join(tmp, "secret.bin")
            sess = os.path.join(tmp, "session.ctx")
            with open(cred, "wb") as f:
                f.write(credential_file)
            try:
                self.run("tpm2_startauthsession", "--policy-session", "-S", sess)
                self.run("tpm2_policysecret", "-S", sess, "-c", "e")
                self.run("tpm2_activatecredential", "-c", hex(self.ak_handle),
                         "-C", hex(self.ek_handle), "-i", cred, "-o", out,
                         "-P", f"session:{sess}")
            finally:
                if os.path.exists(sess):
                    self._flush(sess)
            with open(out, "rb") as f:
                return f.read()

    # -- quotes -----------------------------------------------------------------
    def read_pcrs(self, pcrs: tuple[int, ...]) -> dict[int, bytes]:
        order = tuple(sorted(set(pcrs)))
        with tempfile.TemporaryDirectory(dir=self._state()) as tmp:
            out = os.path.join(tmp, "pcrs.bin")
            self.run("tpm2_pcrread", "sha256:" + ",".join(map(str, order)), "-o", out)
            with open(out, "rb") as f:
                raw = f.read()
        if len(raw) != 32 * len(order):
            raise BackendError(f"tpm2_pcrread returned {len(raw)} bytes")
        return {i: raw[32 * k : 32 * k + 32] for k, i in enumerate(order)}

    def read_event_log(self) -> bytes:
        try:
            return self.event_log_path.read_bytes()
        except OSError as exc:
            raise BackendError(f"cannot read event log {self.event_log_path}: {exc}") from None

    def quote(self, qualifying_data: bytes, pcrs: tuple[int, ...] = DEFAULT_PCRS) -> Evidence:
        if len(qualifying_data) > 64:
            raise BackendError("qualifying data longer than 64 bytes")
        order = tuple(sorted(set(pcrs)))
        sel = "sha256:" + ",".join(map(str, order))
        _, ak = self._publics()
        for _attempt in range(3):
            with tempfile.TemporaryDirectory(dir=self._state()) as tmp:
                msg, sig = os.path.join(tmp, "msg.bin"), os.path.join(tmp, "sig.bin")
                self.run("tpm2_quote", "-c", hex(self.ak_handle), "-l", sel,
                         "-q", qualifying_data.hex(), "-m", msg, "-s", sig, "-g", "sha256")
                with open(msg, "rb") as f:
                    attest = f.read()
                with open(sig, "rb") as f:
                    signature = f.read()
            values = self.read_pcrs(order)
            log = self.read_event_log()
            try:
                parsed = parse_attest(attest)
            except EvidenceError as exc:
                raise BackendError(f"tpm2_quote output unparsable: {exc}") from None
            # PCRs may change between the quote and the read; retry in that case
            if parsed.pcr_digest == pcr_digest(TPM_ALG_SHA256, [values[i] for i in order]):
                return Evidence(
                    mode="tpm2",
                    device_id=self.device_id(),
                    ak_name=parse_tpm2b_public(ak).name,
                    quote=attest,
                    signature=signature,
                    pcrs={"sha256": values},
                    event_log=log,
                )
        raise BackendError("PCRs kept changing while quoting")
