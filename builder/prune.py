"""Delete from the root tree the paths rules say must not be there (package leftovers
such as usbguard's IPC access files); links are removed, never followed."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath


def remove_paths(root: Path, patterns: list[str]) -> list[str]:
    """Remove every in-image path matching a pattern (absolute, glob in the last part)."""
    removed = []
    for pattern in patterns:
        rel = PurePosixPath(pattern).relative_to("/")
        parent = root / rel.parent
        if parent.is_symlink() or not parent.is_dir():
            continue
        for path in sorted(parent.glob(rel.name)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append("/" + path.relative_to(root).as_posix())
    return removed
