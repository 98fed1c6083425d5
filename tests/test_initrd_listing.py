"""builder/cpio.py lists an initrd (plain early cpio + compressed main cpio) the way the
pipeline records it in the tree; builder/prune.py deletes what rules name, and only that."""

from __future__ import annotations

import gzip
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.cpio import list_cpio
from builder.errors import BuildError
from builder.initrd import LISTING, record_listing
from builder.prune import remove_paths


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data), with its trailer, 4-byte aligned."""
    out = b""
    for name, mode, data in [*entries, ("TRAILER!!!", 0, b"")]:
        fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
        out += head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)
    return out


EARLY = [("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"ucode")]
MAIN = [("init", 0o120777, b"usr/lib/systemd/systemd"),
        ("usr/lib/systemd/systemd-veritysetup", 0o100755, b"\x7fELF" + b"x" * 100),
        ("usr/lib/modules/6.12/kernel/drivers/md/dm-verity.ko.xz", 0o100644, b"y" * 33)]


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_list_early_and_compressed_segments(compress: Callable[[bytes], bytes]) -> None:
    data = newc(EARLY) + b"\0" * 512 + compress(newc(MAIN))
    members = list_cpio(data)
    assert [m.path for m in members] == [e[0] for e in EARLY + MAIN]
    assert members[2].mode == 0o100755 and members[2].size == 104


def test_unknown_compression_is_a_build_error() -> None:
    with pytest.raises(BuildError, match="unsupported compression"):
        list_cpio(newc(EARLY) + b"BZh91AY&SY" + b"\0" * 32)


def test_record_listing_writes_the_tree_file(tmp_path: Path) -> None:
    img = tmp_path / "initrd.img"
    img.write_bytes(newc(EARLY) + gzip.compress(newc(MAIN)))
    root = tmp_path / "root"
    summary = record_listing(root, img)
    assert summary == {"size": img.stat().st_size, "files": 4, "modules": 1,
                       "listing": "/" + LISTING}
    lines = (root / LISTING).read_text().splitlines()
    assert "100755 104 usr/lib/systemd/systemd-veritysetup" in lines
    assert lines == sorted(lines, key=lambda line: line.split(" ", 2)[2])


def test_remove_paths_deletes_matches_and_never_follows_links(tmp_path: Path) -> None:
    ipc = tmp_path / "etc/usbguard/IPCAccessControl.d"
    ipc.mkdir(parents=True)
    (ipc / ":plugdev").write_text("Devices=modify\n")
    (ipc / "sub").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    os.symlink(outside, tmp_path / "etc/linked")
    removed = remove_paths(tmp_path, ["/etc/usbguard/IPCAccessControl.d/*", "/etc/linked/*",
                                      "/etc/absent/*"])
    assert removed == ["/etc/usbguard/IPCAccessControl.d/:plugdev",
                       "/etc/usbguard/IPCAccessControl.d/sub"]
    assert (outside / "keep").exists() and ipc.is_dir() and not any(ipc.iterdir())
