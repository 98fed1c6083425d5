"""The tools tree: a cached Debian 13 chroot with systemd-repart, ukify and friends.

The host (Debian 12, systemd 252) is too old for offline verity images; trixie's tools
run fine from a chroot. Work directories are bound into it at /run/auditbox/<name>.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.bootstrap import BootstrapSpec, ensure_bootstrap, extract
from builder.chroot import chroot_run, mounted_api_fs
from builder.progress import BuildLog

TOOL_PACKAGES = (
    "systemd-repart", "systemd-ukify", "systemd-boot-efi", "systemd-container",
    "erofs-utils", "dosfstools", "mtools", "python3-pefile", "libcryptsetup12",
    "sbsigntool", "fdisk", "kmod", "cpio", "faketime",
)


@dataclass
class ToolsTree:
    root: Path
    log: BuildLog

    @contextmanager
    def session(self, work: Path) -> Iterator[str]:
        """Bind `work` into the tools tree; yield its path as seen inside."""
        inside = f"/run/auditbox/{work.name}"
        with mounted_api_fs(self.log, self.root, {inside: work}):
            yield inside

    def run(self, argv: Sequence[str], *, what: str, capture: bool = False,
            env: dict[str, str] | None = None, merge_stderr: bool = False) -> str:
        return chroot_run(self.log, self.root, argv, what=what, capture=capture, env=env,
                          merge_stderr=merge_stderr)


def ensure_tools(log: BuildLog, cache: Path, suite: str, architecture: str,
                 mirror: str | None) -> ToolsTree:
    spec = BootstrapSpec(suite, architecture, mirror, TOOL_PACKAGES, None, variant="apt")
    root = cache / "tools" / spec.key()
    if not (root / ".complete").exists():
        tarball = ensure_bootstrap(log, cache, spec)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root.parent))
        try:
            extract(log, tarball, tmp)
            (tmp / ".complete").touch()
            # the tree only ever appears whole (renamed into place). If a concurrent build
            # got there first, keep its tree (it may have API filesystems bound into it: it
            # must never be deleted from under it) and drop ours, which nothing uses.
            with contextlib.suppress(OSError):
                os.rename(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return ToolsTree(root, log)
