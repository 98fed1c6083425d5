"""UEFI structures inside event-log events: UEFI_VARIABLE_DATA and EFI_SIGNATURE_DATA.

UEFI_VARIABLE_DATA (TCG PC Client PFP, the data of EV_EFI_VARIABLE_* events):
VariableName GUID (16 bytes), UnicodeNameLength (u64, characters), VariableDataLength
(u64), UnicodeName (UTF-16LE, no terminator), VariableData. Little-endian.

For EV_EFI_VARIABLE_AUTHORITY the VariableData is the EFI_SIGNATURE_DATA that verified
an image: SignatureOwner GUID (16 bytes) then the X.509 certificate (DER) from ``db``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from .errors import EvidenceError

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c").bytes_le
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f").bytes_le
MAX_NAME_CHARS = 1024


@dataclass(frozen=True)
class Variable:
    guid: bytes
    name: str
    data: bytes


def parse_variable(data: bytes) -> Variable:
    """Parse UEFI_VARIABLE_DATA strictly (lengths must add up exactly)."""
    if len(data) < 32:
        raise EvidenceError("UEFI variable data truncated")
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    if name_len > MAX_NAME_CHARS or data_len > len(data) or \
            32 + 2 * name_len + data_len != len(data):
        raise EvidenceError("UEFI variable data lengths do not add up")
    try:
        name = data[32:32 + 2 * name_len].decode("utf-16-le")
    except UnicodeDecodeError:
        raise EvidenceError("UEFI variable name is not UTF-16") from None
    return Variable(data[:16], name, data[32 + 2 * name_len:])


def encode_variable(guid: bytes, name: str, value: bytes) -> bytes:
    return guid + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value


def signature_certificate(var: Variable) -> bytes | None:
    """The DER certificate of an authority event's EFI_SIGNATURE_DATA from ``db``, else None."""
    if var.guid != EFI_IMAGE_SECURITY_DATABASE or var.name != "db" or len(var.data) <= 16:
        return None
    return var.data[16:]
