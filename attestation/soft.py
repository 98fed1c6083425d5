"""Software attestation backend (no TPM): for development, CI and TPM-less machines.

State directory layout (default /var/lib/auditbox-attest/soft):

    ak.key      Ed25519 private key, PKCS#8 PEM, mode 0600
    state.json  canonical JSON {"boot_id", "reset_count", "registers", "event_log"}

Registers: ``R = SHA256(R || event_digest)`` with
``event_digest = SHA256(u32le(event_type) || u32le(register) || data)``.
The event log uses the TCG crypto-agile format with a single sha256 bank, so the
verifier parses it with the same code as a TPM log (and additionally checks every
digest against its data).

A new boot (``/proc/sys/kernel/random/boot_id`` changed) bumps ``reset_count``,
clears the registers and measures the boot: register 4 gets
``uki_sha256=<hex>`` (EV_EFI_BOOT_SERVICES_APPLICATION) and register 11 gets
``cmdline=<kernel command line>`` (EV_IPL).

The quote is a TPMS_ATTEST (magic TPM_GENERATED, type QUOTE, qualifiedSigner = AK
name, extraData = qualifying data, clock info with resetCount, the register
selection and their sha256 digest) encoded exactly as a TPM does, and signed with
Ed25519 over ``SOFT_QUOTE_PREFIX || TPMS_ATTEST``. Root on the device can forge
all of this; the device's mode is fixed at enrollment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import canonical, eventlog
from .errors import BackendError, EvidenceError
from .evidence import Evidence
from .tpm_structs import (
    TPM_ALG_SHA256,
    ClockInfo,
    PcrSelection,
    encode_attest_quote,
    pcr_digest,
)

SOFT_QUOTE_PREFIX = b"auditbox-soft-quote-v1\x00"
SOFT_PCRS: tuple[int, ...] = (4, 11)
DEFAULT_STATE_DIR = Path("/var/lib/auditbox-attest/soft")
DEFAULT_UKI_PATHS = (
    Path("/efi/EFI/BOOT/BOOTX64.EFI"),
    Path("/boot/efi/EFI/BOOT/BOOTX64.EFI"),
)


def soft_event_digest(event_type: int, register: int, data: bytes) -> bytes:
    return hashlib.sha256(struct.pack("<II", event_type, register) + data).digest()


def soft_ak_name(public_raw: bytes) -> bytes:
    """Name of a soft AK: sha256 nameAlg || SHA256(raw Ed25519 public key)."""
    return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(public_raw).digest()


def soft_device_id(public_raw: bytes) -> str:
    return "soft-" + hashlib.sha256(public_raw).hexdigest()[:32]


def _boottime_ms() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


class SoftBackend:
    mode = "soft"

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id"),
        cmdline_path: Path = Path("/proc/cmdline"),
        uki_paths: tuple[Path, ...] = DEFAULT_UKI_PATHS,
        clock_ms: Callable[[], int] = _boottime_ms,
        device_id: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.boot_id_path = boot_id_path
        self.cmdline_path = cmdline_path
        self.uki_paths = uki_paths
        self.clock_ms = clock_ms
        self._device_id = device_id

    # -- key ------------------------------------------------------------------
    def _key(self) -> Ed25519PrivateKey:
        path = self.state_dir / "ak.key"
        if path.exists():
            st = path.stat()
            if st.st_mode & 0o077:
                raise BackendError(f"{path}: mode {oct(st.st_mode & 0o777)} is not 0600")
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise BackendError(f"{path}: not an Ed25519 key")
            return key
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return key

    def public_raw(self) -> bytes:
        with self._locked():
            return self._key().public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )

    def device_id(self) -> str:
        return self._device_id or soft_device_id(self.public_raw())

    # -- state ----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> dict[str, object] | None:
        path = self.state_dir / "state.json"
        if not path.exists():
            return None
        try:
            obj = canonical.loads(path.read_bytes())
            return canonical.require_keys(
                obj, "soft state", {"boot_id", "reset_count", "registers", "event_log"}
            )
        except EvidenceError as exc:
            raise BackendError(f"{path}: {exc}") from None

    def _write_state(self, state: dict[str, object]) -> None:
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(canonical.dumps(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _boot_id(self) -> str:
        try:
            return self.boot_id_path.read_text().strip()
        except OSError as exc:
            raise BackendError(f"cannot read boot id: {exc}") from None

    def _boot_measurements(self) -> list[tuple[int, int, bytes]]:
        try:
            cmdline = self.cmdline_path.read_bytes().strip()
        except OSError:
            cmdline = b""
        uki = b"unknown"
        for p in self.uki_paths:
            if p.is_file():
                uki = hashlib.sha256(p.read_bytes()).hexdigest().encode()
                break
        return [
            (4, eventlog.EV_EFI_BOOT_SERVICES_APPLICATION, b"uki_sha256=" + uki),
            (11, eventlog.EV_IPL, b"cmdline=" + cmdline),
        ]

    def _current(self) -> dict[str, object]:
        """State for this boot; a new boot bumps the reset counter and re-measures."""
        state = self._read_state()
        boot_id = self._boot_id()
        if state is not None and state["boot_id"] == boot_id:
            return state
        prev = state["reset_count"] if state is not None else 0
        if type(prev) is not int or prev < 0:
            raise BackendError("soft state: bad reset_count")
        log = eventlog.encode_spec_id(((TPM_ALG_SHA256, 32),))
        state = {
            "boot_id": boot_id,
            "reset_count": prev + 1,
            "registers": {},
            "event_log": canonical.b64e(log),
        }
        for reg, typ, data in self._boot_measurements():
            state = self._extend(state, reg, typ, data)
        self._write_state(state)
        return state

    @staticmethod
    def _extend(state: dict[str, object], reg: int, typ: int, data: bytes) -> dict[str, object]:
        if not 0 <= reg < eventlog.NUM_PCRS:
            raise BackendError(f"register {reg} out of range")
        regs = dict(state["registers"])  # type: ignore[call-overload]
        old = bytes.fromhex(regs.get(str(reg), "00" * 32))
        digest = soft_event_digest(typ, reg, data)
        regs[str(reg)] = hashlib.sha256(old + digest).hexdigest()
        log = canonical.b64d(state["event_log"], "event_log", eventlog.MAX_EVENT_LOG)
        log += eventlog.encode_event(reg, typ, [(TPM_ALG_SHA256, digest)], data)
        return {**state, "registers": regs, "event_log": canonical.b64e(log)}

    # -- public API -------------------------------------------------------------
    def extend(self, register: int, event_type: int, data: bytes) -> None:
        """Measure ``data`` into a register and append it to the event log."""
        with self._locked():
            state = self._extend(self._current(), register, event_type, data)
            self._write_state(state)

    def read_registers(self, pcrs: tuple[int, ...] = SOFT_PCRS) -> dict[int, bytes]:
        with self._locked():
            regs = self._current()["registers"]
            assert isinstance(regs, dict)
            return {i: bytes.fromhex(regs.get(str(i), "00" * 32)) for i in pcrs}

    def quote(self, qualifying_data: bytes, pcrs: tuple[int, ...] = SOFT_PCRS) -> Evidence:
        if len(qualifying_data) > 64:
            raise BackendError("qualifying data longer than 64 bytes")
        with self._locked():
            key = self._key()
            state = self._current()
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            name = soft_ak_name(raw)
            regs = state["registers"]
            assert isinstance(regs, dict)
            order = tuple(sorted(set(pcrs)))
            values = {i: bytes.fromhex(regs.get(str(i), "00" * 32)) for i in order}
            reset = state["reset_count"]
            assert isinstance(reset, int)
            clock = ClockInfo(self.clock_ms(), reset, 0, 1)
            sel = (PcrSelection(TPM_ALG_SHA256, order, 3),)
            attest = encode_attest_quote(
                name, qualifying_data, clock, 0, sel,
                pcr_digest(TPM_ALG_SHA256, [values[i] for i in order]),
            )
            sig = key.sign(SOFT_QUOTE_PREFIX + attest)
            log = canonical.b64d(state["event_log"], "event_log", eventlog.MAX_EVENT_LOG)
            return Evidence(
                mode="soft",
                device_id=self._device_id or soft_device_id(raw),
                ak_name=name,
                quote=attest,
                signature=sig,
                pcrs={"sha256": values},
                event_log=log,
            )

    def enrollment_request(self, token: str) -> dict[str, object]:
        raw = self.public_raw()
        return {
            "format": 1,
            "mode": "soft",
            "device_id": self._device_id or soft_device_id(raw),
            "ak_public": canonical.b64e(raw),
            "ak_name": soft_ak_name(raw).hex(),
            "token": token,
        }
