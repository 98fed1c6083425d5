"""Run commands inside a directory tree with /proc, /sys and /dev bound (root only)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from builder.errors import BuildError
from builder.progress import BuildLog

CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


@contextmanager
def bind(log: BuildLog, source: Path, target: Path, readonly: bool = False) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    log.run(["mount", "--bind", source, target], what=f"mount --bind {source}")
    try:
        if readonly:
            log.run(["mount", "-o", "remount,bind,ro", target], what=f"remount {target} ro")
        yield target
    finally:
        log.run(["umount", "-l", target], check=False)


@contextmanager
def mounted_api_fs(log: BuildLog, root: Path,
                   extra: dict[str, Path] | None = None) -> Iterator[None]:
    """Bind /proc, /sys, /dev (and extra {path-in-root: host-path}) into root."""
    with ExitStack() as stack:
        for name in ("proc", "sys", "dev"):
            stack.enter_context(bind(log, Path("/") / name, root / name))
        for inside, host in (extra or {}).items():
            stack.enter_context(bind(log, host, root / inside.lstrip("/")))
        yield


def chroot_run(log: BuildLog, root: Path, argv: Sequence[str | Path], *, what: str,
               env: dict[str, str] | None = None, capture: bool = False,
               merge_stderr: bool = False) -> str:
    full_env = dict(CHROOT_ENV)
    full_env.update(env or {})
    return log.run(["chroot", str(root), *[str(a) for a in argv]], what=what, env=full_env,
                   capture=capture, merge_stderr=merge_stderr)


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    base = path.resolve()
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == base or base in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_tree(log: BuildLog, path: Path) -> None:
    """rmtree that first unmounts whatever is still mounted inside the tree.

    shutil.rmtree does not stop at mount points: a /dev or /proc left bound inside a
    build tree would otherwise be emptied on the host.
    """
    if not path.exists():
        return
    for point in mounts_below(path):
        log.run(["umount", "-l", point], check=False)
    if mounts_below(path):
        raise BuildError(f"refusing to delete {path}: something is still mounted inside "
                         f"(log: {log.path})")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.write(f"cannot delete {path}: {exc}")
        raise BuildError(f"cannot delete {path}: {exc.strerror}: {exc.filename} "
                         f"(log: {log.path})") from None
