"""The initrd: dracut in the image tree (systemd + veritysetup), cached by its inputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.cache import cache_key
from builder.chroot import chroot_run, mounted_api_fs
from builder.progress import BuildLog

DRACUT_ARGS = ("--no-hostonly", "--reproducible", "--force",
               "--add", "systemd-veritysetup", "--omit", "plymouth",)


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
