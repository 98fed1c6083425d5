"""setid: the build strips setuid/setgid bits from every file but an allow-list; checked by
listing every setuid/setgid file of the tree and of the running system."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, DirTree, Tree, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.setid import SETID, setid_files

VM_LIST = "find / -xdev -type f -perm /6000 -printf '%m %p\\n'"


def allowed(params: Params) -> list[str]:
    return sorted({str(p) for p in params["allow"]})


def validate(params: Params) -> None:
    for p in params["allow"]:
        path = PurePosixPath(str(p))
        if not path.is_absolute() or ".." in path.parts or str(path) != str(p):
            raise ValueError(f"allow: {p!r} is not an absolute, normalised path")


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    plan.setid_allow = sorted({*(plan.setid_allow or []), *allowed(params)})


def tree_setid(tree: Tree) -> dict[str, int]:
    if isinstance(tree, DirTree):
        return setid_files(tree.root)
    found = {}
    for path in tree.walk("/"):
        mode = tree.mode(path)
        if mode is not None and mode & SETID and not tree.is_symlink(path):
            found[path] = mode
    return found


def _verdict(found: dict[str, int], allow: list[str]) -> None:
    extra = {p: m for p, m in found.items() if p not in allow}
    if extra:
        listed = ", ".join(f"{p} ({m:04o})" for p, m in sorted(extra.items()))
        raise AssertionError(f"{len(extra)} setuid/setgid file(s) not on the allow-list "
                             f"[{', '.join(allow) or 'empty'}]: {listed}")


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    allow = allowed(params)

    def static(target: Any) -> None:
        _verdict(tree_setid(tree_of(target)), allow)

    def vm(host: Any) -> None:
        rc, out = vm_run(host, VM_LIST)
        if rc != 0:
            raise AssertionError(f"`{VM_LIST}` exited {rc}: {out.strip()[:400]}")
        found = {}
        for line in out.splitlines():
            mode, _, path = line.partition(" ")
            found[path] = int(mode, 8)
        _verdict(found, allow)

    what = "every setuid/setgid file is on the allow-list: " + (", ".join(allow) or "(empty)")
    return [ctx.check("setid-files", "static", static, what),
            ctx.check("setid-files", "vm", vm, what)]


def describe(ctx: RuleContext, params: Params) -> str:
    allow = allowed(params)
    return ("the build clears setuid/setgid on every file except: "
            + (", ".join(allow) or "none") + " (manifest removed.setid lists what it cleared)")


KIND = Kind(
    name="setid",
    params={"allow": Param("list", default=[],
                           help="absolute paths (as under /usr) that keep setuid/setgid")},
    apply=apply, checks=checks, describe=describe, validate=validate,
)
