"""Which kernel modules stay in the image: the rules' removals, the module allow-list, the
pipeline's keep list, and what the modules need of each other (modules.dep).

- A module a removal pattern names, and no keep pattern, goes (builder/modules.py).
- With an allow-list, a module that neither the allow-list nor keep names goes as well,
  unless a module that stays needs it: dependencies come along.
- A module whose dependency goes, goes too (it could not load). If that would take a module
  `keep` protects (what the image needs to boot, filter or measure), the build stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from builder.errors import BuildError
from builder.modules import matches

# top-level directories under kernel/: a pattern without "/" is a module name, so "crypto"
# would name a module called crypto, not the directory (write crypto/*)
KERNEL_DIRS = ("arch", "block", "crypto", "drivers", "fs", "kernel", "lib", "mm", "net",
               "samples", "security", "sound", "virt")


def check_patterns(patterns: Iterable[str]) -> None:
    """ValueError for a pattern that reads as a directory but would match a module name."""
    bad = [p for p in patterns if p in KERNEL_DIRS]
    if bad:
        raise ValueError(f"{', '.join(bad)}: a pattern without / is a module name; "
                         f"for the directory write {bad[0]}/*")


@dataclass(frozen=True)
class Trim:
    kept: list[str]                     # paths relative to kernel/
    removed: list[str]
    unloadable: dict[str, str]          # kept by the patterns, removed: it needs this one


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {module: its dependencies}, paths relative to kernel/."""
    def rel(path: str) -> str:
        return path.removeprefix("kernel/")

    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, needs = line.partition(":")
        deps[rel(module.strip())] = [rel(d) for d in needs.split()]
    return deps


def closure(start: Iterable[str], deps: dict[str, list[str]], present: set[str]) -> set[str]:
    """start plus every module (in present) they need, transitively."""
    out = set(start)
    stack = list(out)
    while stack:
        for dep in deps.get(stack.pop(), []):
            if dep in present and dep not in out:
                out.add(dep)
                stack.append(dep)
    return out


def plan_trim(files: list[str], deps: dict[str, list[str]], remove: list[str],
              keep: list[str], allow: list[str] | None) -> Trim:
    present = set(files)
    denied = {f for f in files if matches(f, remove) and not matches(f, keep)}
    if allow is None:
        wanted = present - denied
    else:
        named = {f for f in files if matches(f, [*allow, *keep])} - denied
        wanted = closure(named, deps, present - denied)
    unloadable: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for f in sorted(wanted):
            missing = [d for d in deps.get(f, []) if d not in wanted]
            if missing:
                wanted.discard(f)
                unloadable[f] = missing[0]
                changed = True
    needed = sorted(f for f in unloadable if matches(f, keep))
    if needed:
        raise BuildError("the image needs " + ", ".join(
            f"{f} (which needs {unloadable[f]})" for f in needed[:5])
            + ", but the rules remove what they need: allow it (kernel.modules.allow) "
              "or narrow the rule")
    return Trim(sorted(wanted), sorted(present - wanted), unloadable)
