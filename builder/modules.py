"""Which kernel module files a list of patterns names: the one matcher shared by the
pipeline (deleting modules from the image, builder/tree.py) and the rule checks (proving
them gone, builder/rules/kinds/module_absent.py).

Paths are module files relative to ``/lib/modules/<kver>/kernel/``, e.g.
``drivers/usb/storage/uas.ko.xz``. A pattern is one of:

- a module-name glob (no ``/``): matched against the file's module name, the file name
  without ``.ko[.xz|.zst|.gz]``, with ``-`` and ``_`` equivalent on both sides
  (``usb-storage``, ``snd_*``, ``ums-*``);
- a path glob (with ``/``): fnmatch-style against the relative path, ``*`` crossing
  ``/``, and a pattern also names everything below it (``drivers/usb/storage`` is
  ``drivers/usb/storage/*``).

Use::

    from builder.modules import ModuleSelection
    sel = ModuleSelection(remove=("usb-storage", "drivers/usb/storage"), keep=("tpm*",))
    sel.selects("drivers/usb/storage/uas.ko.xz")      # True: remove it
    sel.select(relative_paths)                         # the ones to remove, in order

``matches(path, patterns)`` is the bare test; ``module_name`` and ``is_module_file`` are
the naming rules. Matching is case-sensitive and depends on nothing but its arguments.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def is_module_file(path: str) -> bool:
    return PurePosixPath(path).name.endswith(SUFFIXES)


def module_name(path: str) -> str:
    """``drivers/usb/storage/usb-storage.ko.xz`` -> ``usb_storage``."""
    name = PurePosixPath(path).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return normalize(name)


def normalize(name: str) -> str:
    """Module names treat - and _ alike; this is the spelling they are compared in."""
    return name.replace("-", "_")


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether any pattern names the module file at path (relative to kernel/)."""
    name = module_name(path)
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*"):
                return True
        elif fnmatch.fnmatchcase(name, normalize(pattern)):
            return True
    return False


@dataclass(frozen=True)
class ModuleSelection:
    """Module files named by `remove` and by none of `keep`."""

    remove: tuple[str, ...]
    keep: tuple[str, ...] = ()

    def selects(self, path: str) -> bool:
        return matches(path, self.remove) and not matches(path, self.keep)

    def select(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if is_module_file(p) and self.selects(p)]
