"""`auditbox build --check-reproducible`: build twice from the same inputs and compare.

If the images differ, name the first differing region (GPT, a partition) and, for the
root partition, the first differing file in the two unpacked trees.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from builder.cache import sha256_file
from builder.chroot import bind
from builder.pipeline import BuildOptions, build
from builder.progress import BuildLog

CHUNK = 1 << 20


def _first_difference(a: Path, b: Path) -> int | None:
    with a.open("rb") as fa, b.open("rb") as fb:
        offset = 0
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                for i, (x, y) in enumerate(zip(ca, cb, strict=False)):
                    if x != y:
                        return offset + i
                return offset + min(len(ca), len(cb))
            if not ca:
                return None
            offset += len(ca)


def _region(manifest: dict[str, Any], offset: int) -> dict[str, Any] | None:
    for part in manifest["partitions"]:
        start = int(part["offset"])
        if start <= offset < start + int(part["raw_size"]):
            return dict(part)
    return None


def extract_partition(log: BuildLog, image: Path, part: dict[str, Any], dest: Path,
                      tools: Path | None = None) -> None:
    """Unpack the erofs partition `part` (a manifest partitions entry) of image into dest.

    With `tools` (a trixie tools tree), its fsck.erofs unpacks: Debian 12's (1.5) chowns
    after chmod and so loses every setuid/setgid bit."""
    blob = dest.with_suffix(".erofs")
    with image.open("rb") as src, blob.open("wb") as dst:
        src.seek(int(part["offset"]))
        left = int(part["raw_size"])
        while left:
            chunk = src.read(min(left, CHUNK))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    dest.mkdir(parents=True)
    try:
        if tools is None:
            log.run(["fsck.erofs", f"--extract={dest}", "--force", "--preserve", blob],
                    what=f"fsck.erofs --extract {image.name}")
        else:
            inside = Path("run") / f"auditbox-extract-{os.getpid()}-{dest.name}"
            with bind(log, dest.parent.resolve(), tools / inside):
                log.run(["chroot", tools, "fsck.erofs", f"--extract=/{inside}/{dest.name}",
                         "--force", "--preserve", f"/{inside}/{blob.name}"],
                        what=f"fsck.erofs --extract {image.name} (tools tree)")
            (tools / inside).rmdir()
    finally:
        blob.unlink()


def _first_differing_file(a: Path, b: Path) -> str | None:
    cmp = filecmp.dircmp(a, b)
    for name in sorted(cmp.left_only + cmp.right_only):
        return f"{name} (only in one build)"
    for name in sorted(cmp.diff_files + cmp.funny_files):
        return name
    for name in sorted(cmp.common_dirs):
        sub = _first_differing_file(a / name, b / name)
        if sub:
            return f"{name}/{sub}"
    for name in sorted(cmp.common_files):
        sa, sb = (a / name).lstat(), (b / name).lstat()
        if (sa.st_mode, sa.st_uid, sa.st_gid, int(sa.st_mtime)) != \
                (sb.st_mode, sb.st_uid, sb.st_gid, int(sb.st_mtime)):
            return f"{name} (metadata)"
    return None


def explain(log: BuildLog, first: Path, second: Path) -> str:
    """Where two differing builds first differ, in words."""
    offset = _first_difference(first / "image.raw", second / "image.raw")
    if offset is None:
        return "images identical"
    manifest = json.loads((first / "manifest.json").read_text())
    part = _region(manifest, offset)
    if part is None:
        return f"first difference at byte {offset}: partition table / disk header"
    where = f"first difference at byte {offset}: partition {part['type']}"
    if part["type"].startswith("root-") and not part["type"].endswith("-verity"):
        with tempfile.TemporaryDirectory(prefix="auditbox-repro-") as tmp:
            ta, tb = Path(tmp) / "a", Path(tmp) / "b"
            extract_partition(log, first / "image.raw", part, ta)
            extract_partition(log, second / "image.raw", part, tb)
            name = _first_differing_file(ta, tb)
        where += f", first differing file /{name}" if name else " (same files: layout differs)"
    return where


def check_reproducible(opts: BuildOptions) -> tuple[bool, str]:
    """Build twice with the same SOURCE_DATE_EPOCH; keep the first build in OUT."""
    if "SOURCE_DATE_EPOCH" not in os.environ:
        os.environ["SOURCE_DATE_EPOCH"] = str(int(time.time()))
    second = Path(tempfile.mkdtemp(prefix=".repro-", dir=opts.out.resolve().parent)) / "out"
    try:
        build(opts)
        build(replace(opts, out=second))
        a, b = sha256_file(opts.out / "image.raw"), sha256_file(second / "image.raw")
        if a == b:
            return True, f"reproducible: two builds gave identical image.raw (sha256 {a})"
        log = BuildLog(opts.cache / "logs" / f"check-reproducible-{time.strftime('%Y%m%d-%H%M%S')}"
                       ".log", quiet=opts.quiet)
        try:
            return False, "NOT reproducible: " + explain(log, opts.out, second)
        finally:
            log.close()
    finally:
        shutil.rmtree(second.parent, ignore_errors=True)
