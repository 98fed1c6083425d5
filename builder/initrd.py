"""The initrd: dracut in the image tree (systemd + veritysetup), cached by its inputs.

What goes in is configured in the tree itself (/etc/dracut.conf.d, a dracut module under
/usr/lib/dracut/modules.d, /etc/modprobe.d: rule initrd-no-shell), so the cache key covers
those files. After the build, the initrd's file list is written into the tree
(/usr/lib/auditbox/initrd.list), where the rule's checks read it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from builder.cache import cache_key
from builder.chroot import chroot_run, mounted_api_fs
from builder.cpio import list_cpio
from builder.progress import BuildLog

DRACUT_ARGS = ("--no-hostonly", "--reproducible", "--force",
               "--add", "systemd-veritysetup", "--omit", "plymouth",)
# tree files that decide what dracut puts in (relative to the root)
CONFIG_GLOBS = ("etc/modprobe.d/*", "etc/dracut.conf.d/*", "usr/lib/dracut/modules.d/*auditbox*/*")
LISTING = "usr/lib/auditbox/initrd.list"


def config_digest(root: Path) -> list[tuple[str, str]]:
    """(path, sha256) of every file in the tree that configures the initrd."""
    files = sorted({p for g in CONFIG_GLOBS for p in root.glob(g) if p.is_file()})
    return [(p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files]


def ensure_initrd(log: BuildLog, cache: Path, root: Path, kver: str, key_parts: dict[str, object],
                  out: Path) -> bool:
    """Write the initrd to out; return True if it came from the cache."""
    store = cache / "initrd"
    store.mkdir(parents=True, exist_ok=True)
    cached = store / f"{cache_key(dracut=DRACUT_ARGS, kver=kver, **key_parts)}.img"
    if cached.exists():
        shutil.copyfile(cached, out)
        return True
    inside = "/tmp/auditbox-initrd.img"
    with mounted_api_fs(log, root):
        chroot_run(log, root, ["dracut", *DRACUT_ARGS, "--kver", kver, inside], what="dracut")
    produced = root / inside.lstrip("/")
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.partial")  # builds may run side by side
    shutil.move(str(produced), tmp)
    os.replace(tmp, cached)
    shutil.copyfile(cached, out)
    return False


def record_listing(root: Path, initrd: Path) -> dict[str, Any]:
    """Write the initrd's contents ("mode size path" lines) into the tree; a summary."""
    members = sorted(list_cpio(initrd.read_bytes()), key=lambda m: m.path)
    lines = [f"{m.mode:06o} {m.size} {m.path}\n" for m in members]
    target = root / LISTING
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines))
    modules = [m.path for m in members if ".ko" in m.path and stat.S_ISREG(m.mode)]
    return {"size": initrd.stat().st_size, "files": len(members), "modules": len(modules),
            "listing": "/" + LISTING}
