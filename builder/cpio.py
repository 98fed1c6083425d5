"""List a (possibly multi-segment, compressed) newc cpio archive such as an initrd."""

from __future__ import annotations

import gzip
import lzma
from dataclasses import dataclass

from builder.errors import BuildError

MAGICS = (b"070701", b"070702")


@dataclass(frozen=True)
class Member:
    path: str
    mode: int
    size: int


def _segment(data: bytes) -> tuple[list[Member], int]:
    """Members of the uncompressed archive(s) at the start of data; where they end."""
    members: list[Member] = []
    off = 0
    while off < len(data):
        if data[off:off + 6] not in MAGICS:
            if data[off] == 0:           # padding between concatenated archives
                off += 1
                continue
            break
        field = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = field[1], field[6], field[11]
        name = data[off + 110: off + 110 + namesize - 1].decode("utf-8", "replace")
        body = (off + 110 + namesize + 3) & ~3
        off = (body + size + 3) & ~3
        if name != "TRAILER!!!":
            members.append(Member(name, mode, size))
    return members, off


def list_cpio(data: bytes) -> list[Member]:
    """Every member: plain segments first (early microcode), then a gzip or xz tail."""
    members: list[Member] = []
    while data:
        found, end = _segment(data)
        members += found
        rest = data[end:]
        if not rest:
            break
        if rest[:2] == b"\x1f\x8b":
            data = gzip.decompress(rest)
        elif rest[:6] == b"\xfd7zXZ\x00":
            data = lzma.decompress(rest)
        else:
            raise BuildError(f"initrd: unsupported compression (magic {rest[:6].hex()})")
    return members
