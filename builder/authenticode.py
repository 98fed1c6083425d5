"""PE/COFF images: the Authenticode digest (what UEFI firmware measures into PCR 4 for a boot
application) and section contents as a loader sees them."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from builder.errors import BuildError


def _headers(data: bytes, what: str) -> tuple[int, int, int, int]:
    """(optional header offset, its size, section count, data directory offset)."""
    if data[:2] != b"MZ" or len(data) < 0x40:
        raise BuildError(f"{what}: not a PE file")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise BuildError(f"{what}: no PE signature")
    coff = pe + 4
    nsections, = struct.unpack_from("<H", data, coff + 2)
    opt_size, = struct.unpack_from("<H", data, coff + 16)
    opt = coff + 20
    magic, = struct.unpack_from("<H", data, opt)
    if magic == 0x20B:           # PE32+
        dd = opt + 112
    elif magic == 0x10B:         # PE32
        dd = opt + 96
    else:
        raise BuildError(f"{what}: unknown optional header magic {magic:#x}")
    return opt, opt_size, nsections, dd


def authenticode_digest(data: bytes, what: str = "PE image") -> str:
    """Hex Authenticode sha256 of a PE image (checksum and certificate table left out)."""
    opt, opt_size, nsections, dd = _headers(data, what)
    checksum = opt + 64
    size_of_headers, = struct.unpack_from("<I", data, opt + 60)
    cert_entry = dd + 4 * 8
    cert_off, cert_size = struct.unpack_from("<II", data, cert_entry)
    h = hashlib.sha256()
    h.update(data[:checksum])
    h.update(data[checksum + 4:cert_entry])
    h.update(data[cert_entry + 8:size_of_headers])
    sections = []
    table = opt + opt_size
    for i in range(nsections):
        raw_size, raw_ptr = struct.unpack_from("<II", data, table + 40 * i + 16)
        if raw_size:
            sections.append((raw_ptr, raw_size))
    hashed = size_of_headers
    for ptr, size in sorted(sections):
        h.update(data[ptr:ptr + size])
        hashed += size
    end = len(data) - (cert_size if cert_off else 0)
    if end > hashed:
        h.update(data[hashed:end])
    return h.hexdigest()


def authenticode_sha256(path: Path) -> str:
    return authenticode_digest(path.read_bytes(), str(path))


def section(data: bytes, name: str, what: str = "PE image") -> bytes:
    """The section called ``name`` as loaded in memory: VirtualSize bytes (the file's bytes,
    zero-filled past SizeOfRawData), which is what systemd-stub hands on (e.g. ``.linux``)."""
    opt, opt_size, nsections, _dd = _headers(data, what)
    table = opt + opt_size
    for i in range(nsections):
        entry = table + 40 * i
        if data[entry:entry + 8].rstrip(b"\0").decode("ascii", "replace") != name:
            continue
        vsize, _vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, entry + 8)
        size = int(vsize or raw_size)
        body = data[raw_ptr:raw_ptr + min(size, int(raw_size))]
        return body + b"\0" * (size - len(body))
    raise BuildError(f"{what}: no {name} section")
