"""Checks and the two views they inspect: a built root tree (static) and a running VM.

A check's ``run`` receives either a pytest-testinfra ``Host`` or, for static checks, a
``pathlib.Path`` of an extracted root tree. Static checks go through :func:`tree_of`, which
reads files straight from disk when it can (a Path, or a testinfra chroot Host) and through
``host.file`` otherwise. VM checks only use ``host.run(cmd)`` (``.rc``, ``.stdout``).
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from builder.modules import is_module_file

Where = Literal["static", "vm"]


@dataclass(frozen=True)
class Check:
    rule_id: str
    name: str
    where: Where
    run: Callable[[Any], None]
    description: str = ""


class Tree(Protocol):
    """Read-only view of an image root tree; paths are absolute in-image paths."""

    def read(self, path: str) -> str | None: ...
    def mode(self, path: str) -> int | None: ...          # permission bits, None if absent
    def is_symlink(self, path: str) -> bool: ...
    def readlink(self, path: str) -> str | None: ...
    def exists(self, path: str) -> bool: ...              # lstat-based: dangling links exist
    def walk(self, path: str) -> list[str]: ...           # every file/link below path
    def run(self, cmd: str) -> tuple[int, str] | None: ...  # None when commands can't run


class DirTree:
    """A root tree on the local disk; optionally a chroot can run commands in it."""

    def __init__(self, root: Path, can_chroot: bool = False) -> None:
        self.root = root
        self.can_chroot = can_chroot

    def _p(self, path: str, follow_last: bool = False) -> Path:
        """The host path of an in-image path, resolving symlinks inside the root (like a
        chroot would: /var/lib/dpkg -> /usr/lib/auditbox/dpkg stays in the tree)."""
        parts = [p for p in PurePosixPath("/" + path.lstrip("/")).parts[1:] if p != "."]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if candidate.is_symlink() and (parts or follow_last) and hops < 40:
                hops += 1
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                parts = [p for p in PurePosixPath(target).parts if p not in ("/", ".")] + parts
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def read(self, path: str) -> str | None:
        p = self._p(path, follow_last=True)
        try:
            return p.read_text(errors="replace") if not p.is_symlink() else None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def mode(self, path: str) -> int | None:
        try:
            return stat.S_IMODE(os.lstat(self._p(path)).st_mode)
        except FileNotFoundError:
            return None

    def is_symlink(self, path: str) -> bool:
        return self._p(path).is_symlink()

    def readlink(self, path: str) -> str | None:
        p = self._p(path)
        return os.readlink(p) if p.is_symlink() else None

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._p(path))

    def walk(self, path: str) -> list[str]:
        """Files and links below path, reported under path (links to dirs not descended)."""
        base = self._p(path, follow_last=True)
        prefix = "/" + path.strip("/")
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = str(Path(dirpath).relative_to(base))
            here = prefix if rel == "." else f"{prefix}/{rel}"
            here = here.replace("//", "/")
            out += [f"{here}/{n}" for n in filenames]
            out += [f"{here}/{n}" for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        return sorted(out)

    def run(self, cmd: str) -> tuple[int, str] | None:
        if not self.can_chroot or not self.exists("/bin/sh"):
            return None
        proc = subprocess.run(["chroot", str(self.root), "/bin/sh", "-c", cmd],
                              capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout + proc.stderr


class HostTree:
    """A root tree seen through a testinfra Host (paths prefixed with ``root``)."""

    def __init__(self, host: Any, root: str = "/") -> None:
        self.host = host
        self.root = root.rstrip("/")

    def _p(self, path: str) -> str:
        return self.root + path if self.root else path

    def read(self, path: str) -> str | None:
        f = self.host.file(self._p(path))
        if not f.exists or f.is_symlink or not f.is_file:
            return None
        return str(f.content_string)

    def mode(self, path: str) -> int | None:
        f = self.host.file(self._p(path))
        if not (f.exists or f.is_symlink):
            return None
        res = self.host.run("stat -c %a " + shlex.quote(self._p(path)))
        return int(res.stdout.strip(), 8) if res.rc == 0 else None

    def is_symlink(self, path: str) -> bool:
        return bool(self.host.file(self._p(path)).is_symlink)

    def readlink(self, path: str) -> str | None:
        res = self.host.run("readlink " + shlex.quote(self._p(path)))
        return str(res.stdout.strip()) if res.rc == 0 else None

    def exists(self, path: str) -> bool:
        quoted = shlex.quote(self._p(path))
        return int(self.host.run(f"test -e {quoted} -o -L {quoted}").rc) == 0

    def walk(self, path: str) -> list[str]:
        res = self.host.run("find " + shlex.quote(self._p(path)) + " ! -type d 2>/dev/null")
        n = len(self.root)
        return sorted(line[n:] for line in res.stdout.splitlines() if line)

    def run(self, cmd: str) -> tuple[int, str] | None:
        if self.root:
            return None
        res = self.host.run(cmd)
        return int(res.rc), str(res.stdout) + str(res.stderr)


def tree_of(target: Any) -> Tree:
    """The static view of a check target (a Path, or a testinfra Host of the tree)."""
    if isinstance(target, (DirTree, HostTree)):
        return target
    if isinstance(target, (str, Path)):
        return DirTree(Path(target))
    backend = getattr(target, "backend", None)
    if backend is not None and type(backend).__name__ == "ChrootBackend":
        root = Path(str(getattr(backend, "name", "") or "/nonexistent"))
        if root.is_absolute() and root.is_dir() and root != Path("/"):
            # read files directly (no process per file); commands still run in the chroot
            return DirTree(root, can_chroot=True)
    return HostTree(target)


def vm_run(host: Any, cmd: str) -> tuple[int, str]:
    """Run a shell command on the VM host in a subshell (a check's `exit` must not end the
    test shell, which may eval commands in place); returns (rc, stdout)."""
    res = host.run(f"( {cmd}\n)")
    return int(res.rc), str(res.stdout)


def kernel_release_dirs(tree: Tree) -> list[str]:
    """/lib/modules/<ver> directories present in the tree (usr-merged paths included)."""
    seen: set[str] = set()
    for base in ("/usr/lib/modules", "/lib/modules"):
        for p in tree.walk(base):
            parts = PurePosixPath(p).parts
            idx = parts.index("modules")
            if len(parts) > idx + 1:
                seen.add("/".join(parts[: idx + 2]).replace("//", "/"))
        if seen:
            break
    return sorted(seen)


def module_files(tree: Tree) -> dict[str, str]:
    """{in-image path: path as builder/modules.py matches it} of every module file: relative
    to <kver>/kernel/, or to <kver>/ for modules outside kernel/ (updates/, extra/)."""
    out: dict[str, str] = {}
    for d in kernel_release_dirs(tree):
        for p in tree.walk(d):
            if is_module_file(p):
                rel = p[len(d):].lstrip("/")
                out[p] = rel.removeprefix("kernel/")
    return out


def enabled_links(tree: Tree, unit: str) -> list[str]:
    """Symlinks named ``unit`` inside any *.wants/ or *.requires/ directory."""
    hits = []
    for base in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"):
        for p in tree.walk(base):
            parent = PurePosixPath(p).parent.name
            if PurePosixPath(p).name == unit and parent.endswith((".wants", ".requires")):
                hits.append(p)
    return hits


DPKG_STATUS = ("/var/lib/dpkg/status", "/usr/lib/auditbox/dpkg/status")  # pipeline relocates


def dpkg_status(tree: Tree) -> str | None:
    for path in DPKG_STATUS:
        text = tree.read(path)
        if text is not None:
            return text
    return None


def dpkg_installed(tree: Tree) -> set[str]:
    """Package names whose dpkg status says 'install ok installed' (or half-installed)."""
    text = dpkg_status(tree) or ""
    names: set[str] = set()
    for stanza in text.split("\n\n"):
        pkg, status = None, ""
        for line in stanza.splitlines():
            if line.startswith("Package:"):
                pkg = line.split(":", 1)[1].strip()
            elif line.startswith("Status:"):
                status = line.split(":", 1)[1].strip()
        if pkg and status.split()[-1:] not in (["not-installed"], ["config-files"]):
            names.add(pkg)
    return names
