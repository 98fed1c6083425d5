"""The kernel-module matcher (builder/modules.py) that the pipeline and the checks share."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.modules import ModuleSelection, is_module_file, matches, module_name
from builder.tree import remove_modules


@pytest.mark.parametrize(("path", "name"), [
    ("drivers/usb/storage/usb-storage.ko.xz", "usb_storage"),
    ("fs/udf/udf.ko", "udf"),
    ("sound/core/snd-pcm.ko.zst", "snd_pcm"),
    ("drivers/x/a.ko.gz", "a"),
    ("drivers/x/kobold.ko.xz", "kobold"),       # ".ko" inside the name is not a suffix
])
def test_module_name(path: str, name: str) -> None:
    assert is_module_file(path)
    assert module_name(path) == name


@pytest.mark.parametrize("path", ["drivers/x/a.ko.bz2", "drivers/x/modules.order", "a.kox"])
def test_not_module_files(path: str) -> None:
    assert not is_module_file(path)


@pytest.mark.parametrize(("path", "patterns", "expected"), [
    ("drivers/usb/storage/usb-storage.ko.xz", ["usb_storage"], True),   # - and _ alike
    ("drivers/usb/storage/usb_storage.ko.xz", ["usb-storage"], True),
    ("drivers/usb/storage/ums-realtek.ko.xz", ["ums_*"], True),         # name glob
    ("drivers/usb/storage/uas.ko.xz", ["drivers/usb/storage"], True),   # a dir names below it
    ("drivers/usb/storage/uas.ko.xz", ["drivers/usb/*"], True),         # * crosses /
    ("drivers/usb/storage/uas.ko.xz", ["drivers/usb/stor"], False),     # no prefix matching
    ("drivers/usb/storage/uas.ko.xz", ["uas*x"], False),                # names lose the suffix
    ("drivers/usb/storage/uas.ko.xz", ["UAS"], False),                  # case-sensitive
    ("sound/virtio/virtio_snd.ko.xz", ["drivers/*virtio*"], False),
    ("drivers/virtio/virtio.ko.xz", ["drivers/*virtio*"], True),
    ("drivers/virtio/virtio.ko.xz", [], False),
    ("sound/soundcore.ko.xz", ["sound"], False),                        # no /: a name
])
def test_matches(path: str, patterns: list[str], expected: bool) -> None:
    assert matches(path, patterns) is expected


def test_selection_removes_unless_kept() -> None:
    sel = ModuleSelection(remove=("sound/*", "drivers/usb/storage", "cdrom"),
                          keep=("sound/core/*", "ums-*"))
    paths = ["sound/core/snd.ko.xz", "sound/soundcore.ko.xz", "drivers/usb/storage/uas.ko.xz",
             "drivers/usb/storage/ums-realtek.ko.xz", "drivers/cdrom/cdrom.ko.xz",
             "drivers/cdrom/README", "fs/udf/udf.ko.xz"]
    assert sel.select(paths) == ["sound/soundcore.ko.xz", "drivers/usb/storage/uas.ko.xz",
                                 "drivers/cdrom/cdrom.ko.xz"]


def test_pipeline_deletes_what_the_selection_names(tmp_path: Path) -> None:
    base = tmp_path / "usr/lib/modules/6.12.0-1-amd64/kernel"
    files = ["drivers/usb/storage/uas.ko.xz", "drivers/usb/storage/ums-realtek.ko.xz",
             "drivers/virtio/virtio.ko.xz", "fs/udf/udf.ko.xz", "fs/udf/notes.txt"]
    for rel in files:
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"")
    removed = remove_modules(tmp_path, "6.12.0-1-amd64", ["drivers/usb", "udf", "virtio"],
                             ["ums_*", "drivers/*virtio*"])
    assert removed == ["drivers/usb/storage/uas.ko.xz", "fs/udf/udf.ko.xz"]
    left = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert left == ["drivers/usb/storage/ums-realtek.ko.xz", "drivers/virtio/virtio.ko.xz",
                    "fs/udf/notes.txt"]
