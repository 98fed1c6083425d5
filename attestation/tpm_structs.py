"""Strict parsers for the TPM 2.0 structures the verifier reads.

Covered: TPMS_ATTEST (quote), TPMT_SIGNATURE (ECDSA, RSASSA, RSAPSS are parsed;
policy decides what is accepted), TPM2B_PUBLIC (RSA and ECC keys),
TPML_PCR_SELECTION, and object Names. All integers are big-endian as on the TPM
wire. Every length is checked against the remaining input and a cap, and the top
level parsers refuse trailing bytes. Errors are EvidenceError only.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .errors import EvidenceError

# Constants (TPM 2.0 Library, Part 2)
TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_HMAC = 0x0005
TPM_ALG_AES = 0x0006
TPM_ALG_XOR = 0x000A
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAES = 0x0015
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_OAEP = 0x0017
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDH = 0x0019
TPM_ALG_ECDAA = 0x001A
TPM_ALG_SM2 = 0x001B
TPM_ALG_ECSCHNORR = 0x001C
TPM_ALG_KDF1_SP800_56A = 0x0020
TPM_ALG_KDF2 = 0x0021
TPM_ALG_KDF1_SP800_108 = 0x0022
TPM_ALG_ECC = 0x0023
TPM_ALG_CFB = 0x0043
TPM_ECC_NIST_P256 = 0x0003

HASH_SIZES: dict[int, int] = {
    TPM_ALG_SHA1: 20,
    TPM_ALG_SHA256: 32,
    TPM_ALG_SHA384: 48,
    TPM_ALG_SHA512: 64,
}
HASH_NAMES: dict[int, str] = {
    TPM_ALG_SHA1: "sha1",
    TPM_ALG_SHA256: "sha256",
    TPM_ALG_SHA384: "sha384",
    TPM_ALG_SHA512: "sha512",
}
BANK_IDS: dict[str, int] = {v: k for k, v in HASH_NAMES.items()}

# TPMA_OBJECT bits
FIXED_TPM = 1 << 1
ST_CLEAR = 1 << 2
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
USER_WITH_AUTH = 1 << 6
ADMIN_WITH_POLICY = 1 << 7
NO_DA = 1 << 10
ENCRYPTED_DUPLICATION = 1 << 11
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN_ENCRYPT = 1 << 18

MAX_ATTEST = 2048
MAX_SIGNATURE = 1024
MAX_PUBLIC = 2048
MAX_PCR_BANKS = 16
MAX_SIZEOF_SELECT = 32
MAX_RSA_BYTES = 512
MAX_ECC_BYTES = 66


_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in (">B", ">H", ">I", ">Q"))


class Reader:
    """Bounds-checked big-endian cursor over bytes."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EvidenceError(f"{what}: expected bytes")
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceError(
                f"{self.what}: truncated (need {n} bytes at offset {self.pos}, "
                f"have {len(self.data) - self.pos})"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _int(self, fmt: struct.Struct) -> int:
        pos = self.pos
        if pos + fmt.size > len(self.data):
            self.take(fmt.size)          # raises with the message
        self.pos = pos + fmt.size
        v: int = fmt.unpack_from(self.data, pos)[0]
        return v

    def u8(self) -> int:
        return self._int(_U8)

    def u16(self) -> int:
        return self._int(_U16)

    def u32(self) -> int:
        return self._int(_U32)

    def u64(self) -> int:
        return self._int(_U64)

    def tpm2b(self, cap: int, field: str) -> bytes:
        size = self.u16()
        if size > cap:
            raise EvidenceError(f"{self.what}: {field} size {size} exceeds {cap}")
        return self.take(size)

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def end(self) -> None:
        if self.pos != len(self.data):
            raise EvidenceError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


# ---------------------------------------------------------------- PCR selection


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the selected PCR indices."""

    hash_alg: int
    pcrs: tuple[int, ...]
    size_of_select: int = 3

    def encode(self) -> bytes:
        bitmap = bytearray(self.size_of_select)
        for i in self.pcrs:
            bitmap[i // 8] |= 1 << (i % 8)
        return struct.pack(">HB", self.hash_alg, self.size_of_select) + bytes(bitmap)


def parse_pcr_selection_list(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32()
    if count > MAX_PCR_BANKS:
        raise EvidenceError(f"{r.what}: PCR selection count {count} exceeds {MAX_PCR_BANKS}")
    out: list[PcrSelection] = []
    seen: set[int] = set()
    for _ in range(count):
        alg, size = _SELECTION_HEAD.unpack(r.take(3))
        if size < 1 or size > MAX_SIZEOF_SELECT:
            raise EvidenceError(f"{r.what}: bad sizeofSelect {size}")
        bitmap = r.take(size)
        if alg in seen:
            raise EvidenceError(f"{r.what}: PCR bank 0x{alg:04x} selected twice")
        seen.add(alg)
        out.append(PcrSelection(alg, _selected(bitmap), size))
    return tuple(out)


_SELECTION_HEAD = struct.Struct(">HB")
_SELECTED: dict[bytes, tuple[int, ...]] = {}


def _selected(bitmap: bytes) -> tuple[int, ...]:
    """PCR indices set in a selection bitmap (memoised: quotes select the same sets)."""
    hit = _SELECTED.get(bitmap)
    if hit is None:
        hit = tuple(i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1)
        if len(_SELECTED) < 4096:
            _SELECTED[bitmap] = hit
    return hit


def parse_tpml_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    r = Reader(data, "TPML_PCR_SELECTION")
    out = parse_pcr_selection_list(r)
    r.end()
    return out


def encode_tpml_pcr_selection(sels: tuple[PcrSelection, ...]) -> bytes:
    return struct.pack(">I", len(sels)) + b"".join(s.encode() for s in sels)


# ------------------------------------------------------------------ TPMS_ATTEST


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: int


@dataclass(frozen=True)
class Attest:
    """A parsed TPMS_ATTEST. ``pcr_select``/``pcr_digest`` are set for quotes only."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes
    raw: bytes


_CLOCK_AND_FIRMWARE = struct.Struct(">QIIBQ")   # TPMS_CLOCK_INFO, firmwareVersion


def parse_attest(data: bytes) -> Attest:
    """Parse a TPMS_ATTEST; the quote body is parsed when type is TPM_ST_ATTEST_QUOTE."""
    if len(data) > MAX_ATTEST:
        raise EvidenceError(f"TPMS_ATTEST: {len(data)} bytes exceeds {MAX_ATTEST}")
    r = Reader(data, "TPMS_ATTEST")
    magic = r.u32()
    typ = r.u16()
    signer = r.tpm2b(2 + 64, "qualifiedSigner")
    extra = r.tpm2b(64, "extraData")
    clk, reset, restart, safe, fw = _CLOCK_AND_FIRMWARE.unpack(r.take(25))
    clock = ClockInfo(clk, reset, restart, safe)
    sels: tuple[PcrSelection, ...] = ()
    digest = b""
    if typ == TPM_ST_ATTEST_QUOTE:
        sels = parse_pcr_selection_list(r)
        digest = r.tpm2b(64, "pcrDigest")
        r.end()
    # other attestation types are kept opaque; the verifier refuses them by type
    return Attest(magic, typ, signer, extra, clock, fw, sels, digest, bytes(data))


def encode_attest_quote(
    qualified_signer: bytes,
    extra_data: bytes,
    clock: ClockInfo,
    firmware_version: int,
    sels: tuple[PcrSelection, ...],
    pcr_digest: bytes,
) -> bytes:
    """Encode a quote TPMS_ATTEST (used by the soft backend and by tests)."""
    return (
        struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
        + struct.pack(">H", len(qualified_signer)) + qualified_signer
        + struct.pack(">H", len(extra_data)) + extra_data
        + struct.pack(">QIIB", clock.clock, clock.reset_count, clock.restart_count, clock.safe)
        + struct.pack(">Q", firmware_version)
        + encode_tpml_pcr_selection(sels)
        + struct.pack(">H", len(pcr_digest)) + pcr_digest
    )


# --------------------------------------------------------------- TPMT_SIGNATURE


@dataclass(frozen=True)
class Signature:
    sig_alg: int
    hash_alg: int
    r: bytes = b""  # ECDSA r, or the RSA signature
    s: bytes = b""  # ECDSA s


def parse_signature(data: bytes) -> Signature:
    if len(data) > MAX_SIGNATURE:
        raise EvidenceError(f"TPMT_SIGNATURE: {len(data)} bytes exceeds {MAX_SIGNATURE}")
    r = Reader(data, "TPMT_SIGNATURE")
    alg = r.u16()
    if alg in (TPM_ALG_ECDSA, TPM_ALG_ECSCHNORR, TPM_ALG_SM2):
        h = r.u16()
        sr = r.tpm2b(MAX_ECC_BYTES, "signatureR")
        ss = r.tpm2b(MAX_ECC_BYTES, "signatureS")
        sig = Signature(alg, h, sr, ss)
    elif alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        h = r.u16()
        sig = Signature(alg, h, r.tpm2b(MAX_RSA_BYTES, "sig"))
    else:
        raise EvidenceError(f"TPMT_SIGNATURE: unsupported signature algorithm 0x{alg:04x}")
    r.end()
    return sig


def encode_signature(sig: Signature) -> bytes:
    head = struct.pack(">HH", sig.sig_alg, sig.hash_alg)
    if sig.sig_alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        return head + struct.pack(">H", len(sig.r)) + sig.r
    return head + struct.pack(">H", len(sig.r)) + sig.r + struct.pack(">H", len(sig.s)) + sig.s


# ----------------------------------------------------------------- TPM2B_PUBLIC


@dataclass(frozen=True)
class Public:
    """A parsed TPMT_PUBLIC (RSA or ECC). ``area`` is the TPMT_PUBLIC bytes."""

    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    sym_alg: int
    sym_bits: int
    sym_mode: int
    scheme: int
    scheme_hash: int
    rsa_bits: int
    rsa_exponent: int
    curve: int
    kdf: int
    kdf_hash: int
    rsa_modulus: bytes
    ecc_x: bytes
    ecc_y: bytes
    area: bytes

    def has(self, bits: int) -> bool:
        return self.attributes & bits == bits

    @property
    def name(self) -> bytes:
        return object_name(self.name_alg, self.area)


def object_name(name_alg: int, area: bytes) -> bytes:
    """TPM object Name: nameAlg (2 bytes BE) || H_nameAlg(TPMT_PUBLIC)."""
    name = HASH_NAMES.get(name_alg)
    if name is None:
        raise EvidenceError(f"unsupported nameAlg 0x{name_alg:04x}")
    return struct.pack(">H", name_alg) + hashlib.new(name, area).digest()


def _sym_def(r: Reader) -> tuple[int, int, int]:
    alg = r.u16()
    if alg == TPM_ALG_NULL:
        return alg, 0, 0
    if alg == TPM_ALG_XOR:
        return alg, r.u16(), 0  # hash alg, no mode
    return alg, r.u16(), r.u16()


def _scheme(r: Reader) -> tuple[int, int]:
    scheme = r.u16()
    if scheme in (TPM_ALG_NULL, TPM_ALG_RSAES):
        return scheme, 0
    h = r.u16()
    if scheme == TPM_ALG_ECDAA:
        r.u16()  # count
    return scheme, h


def parse_public_area(r: Reader) -> Public:
    start = r.pos
    typ = r.u16()
    name_alg = r.u16()
    attrs = r.u32()
    policy = r.tpm2b(64, "authPolicy")
    sym = _sym_def(r)
    scheme, scheme_hash = _scheme(r)
    rsa_bits = rsa_exp = curve = kdf = kdf_hash = 0
    modulus = x = y = b""
    if typ == TPM_ALG_RSA:
        rsa_bits = r.u16()
        rsa_exp = r.u32()
        modulus = r.tpm2b(MAX_RSA_BYTES, "unique.rsa")
    elif typ == TPM_ALG_ECC:
        curve = r.u16()
        kdf, kdf_hash = _scheme(r)
        x = r.tpm2b(MAX_ECC_BYTES, "unique.ecc.x")
        y = r.tpm2b(MAX_ECC_BYTES, "unique.ecc.y")
    else:
        raise EvidenceError(f"{r.what}: unsupported key type 0x{typ:04x}")
    area = r.data[start : r.pos]
    return Public(
        typ, name_alg, attrs, policy, sym[0], sym[1], sym[2], scheme, scheme_hash,
        rsa_bits, rsa_exp, curve, kdf, kdf_hash, modulus, x, y, area,
    )


def parse_tpm2b_public(data: bytes) -> Public:
    """Parse a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC), refusing trailing bytes."""
    if len(data) > MAX_PUBLIC:
        raise EvidenceError(f"TPM2B_PUBLIC: {len(data)} bytes exceeds {MAX_PUBLIC}")
    r = Reader(data, "TPM2B_PUBLIC")
    size = r.u16()
    if size != r.remaining():
        raise EvidenceError(f"TPM2B_PUBLIC: size field {size} != {r.remaining()} bytes")
    inner = Reader(r.take(size), "TPMT_PUBLIC")
    pub = parse_public_area(inner)
    inner.end()
    r.end()
    return pub


def pcr_digest(hash_alg: int, values: list[bytes]) -> bytes:
    """Digest of the concatenated PCR values, as TPM2_Quote computes it."""
    name = HASH_NAMES.get(hash_alg)
    if name is None:
        raise EvidenceError(f"unsupported hash 0x{hash_alg:04x}")
    return hashlib.new(name, b"".join(values)).digest()
