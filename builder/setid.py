"""Setuid and setgid bits in a root tree: list them, strip those a rule does not allow."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SETID = stat.S_ISUID | stat.S_ISGID


def setid_files(root: Path) -> dict[str, int]:
    """{in-image path: permission bits} of every regular file with setuid or setgid set.

    Stays on root's filesystem (like find -xdev) and never follows symlinks, so a mounted
    /proc or a link out of the tree is not walked."""
    found: dict[str, int] = {}
    device = root.lstat().st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).lstat().st_dev == device]
        for name in filenames:
            st = (here / name).lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & SETID:
                found["/" + (here / name).relative_to(root).as_posix()] = stat.S_IMODE(
                    st.st_mode)
    return dict(sorted(found.items()))


def strip_setid(root: Path, allow: list[str]) -> list[str]:
    """Clear setuid/setgid on every file not in allow; returns "path mode" of each stripped."""
    stripped = []
    for path, mode in setid_files(root).items():
        if path in allow:
            continue
        os.chmod(root / path.lstrip("/"), mode & ~SETID)
        stripped.append(f"{path} {mode:04o}")
    return stripped
