"""mmdebstrap a Debian tree as a tarball, cached by (suite, arch, mirror, packages, epoch)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.cache import cache_key
from builder.chroot import remove_tree
from builder.progress import BuildLog

RECIPE_VERSION = 2  # bump when the way a bootstrap is made changes


@dataclass(frozen=True)
class BootstrapSpec:
    suite: str
    architecture: str
    mirror: str | None
    packages: tuple[str, ...]
    source_date_epoch: int | None
    variant: str = "essential"

    def key(self) -> str:
        return cache_key(recipe=RECIPE_VERSION, suite=self.suite, arch=self.architecture,
                         mirror=self.mirror, packages=sorted(self.packages),
                         epoch=self.source_date_epoch, variant=self.variant)


def mmdebstrap_argv(spec: BootstrapSpec, target: Path) -> list[str]:
    argv = ["mmdebstrap", f"--variant={spec.variant}", f"--architectures={spec.architecture}",
            "--mode=root", "--format=tar"]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(spec.packages)))
    argv += [spec.suite, str(target)]
    if spec.mirror:
        argv.append(spec.mirror)
    return argv


def ensure_bootstrap(log: BuildLog, cache: Path, spec: BootstrapSpec) -> Path:
    """Return the cached tarball for spec, running mmdebstrap if it is not there yet."""
    store = cache / "bootstrap"
    store.mkdir(parents=True, exist_ok=True)
    tarball = store / f"{spec.suite}-{spec.architecture}-{spec.key()}.tar"
    if tarball.exists():
        log.say(f"    bootstrap cache hit: {tarball.name}")
        return tarball
    log.say(f"    bootstrap cache miss: running mmdebstrap ({len(spec.packages)} packages)")
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=".tar", dir=store)
    os.close(fd)
    tmp = Path(tmp_name)
    # the kernel's postinst would build an initrd the pipeline replaces anyway: skip it
    env = dict(os.environ, INITRD="No")
    if spec.source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(spec.source_date_epoch)
    try:
        log.run(mmdebstrap_argv(spec, tmp), what="mmdebstrap", env=env)
        os.replace(tmp, tarball)
    finally:
        tmp.unlink(missing_ok=True)
    return tarball


def extract(log: BuildLog, tarball: Path, root: Path) -> None:
    remove_tree(log, root)
    root.mkdir(parents=True)
    log.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball,
             "-C", root], what="extract bootstrap")
