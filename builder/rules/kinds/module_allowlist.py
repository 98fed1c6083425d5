"""module_allowlist: the image keeps only the kernel modules a list names (in groups: storage,
display, input, ...), what they need (modules.dep), and the pipeline's keep list; the build
deletes the rest (builder/module_trim.py) and lists what it kept in the manifest."""

from __future__ import annotations

from typing import Any

from builder.module_trim import check_patterns, closure, parse_modules_dep
from builder.modules import matches
from builder.plan import BuildPlan
from builder.rules.check import Check, kernel_release_dirs, module_files, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.module_absent import keep


def validate(params: Params) -> None:
    for name, patterns in params["groups"].items():
        if not isinstance(patterns, list) or not patterns:
            raise ValueError(f"group {name}: needs a list of module patterns")
        check_patterns(map(str, patterns))
    check_patterns(map(str, params["extra"]))
    unknown = sorted(set(map(str, params["without"])) - set(params["groups"]))
    if unknown:
        raise ValueError(f"without: unknown groups {unknown} "
                         f"(allowed: {', '.join(params['groups'])})")


def patterns(ctx: RuleContext, params: Params) -> list[str]:
    """Every pattern of every group in use, the extras, and the pipeline's keep list."""
    out = [str(p) for name, ps in params["groups"].items() if name not in params["without"]
           for p in ps]
    out += [str(p) for p in params["extra"]]
    return [*out, *(k for k in keep(ctx) if k not in out)]


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    have = plan.modules_allow or []
    plan.modules_allow = [*have, *(p for p in patterns(ctx, params) if p not in have)]


def outside(files: list[str], deps_text: str, allowed: list[str]) -> list[str]:
    """Module files neither the allow-list names nor an allowed module needs."""
    present = set(files)
    named = {f for f in files if matches(f, allowed)}
    kept = closure(named, parse_modules_dep(deps_text), present)
    return sorted(present - kept)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    allowed = patterns(ctx, params)

    def static(target: Any) -> None:
        tree = tree_of(target)
        files = sorted(module_files(tree).values())
        if not files:
            raise AssertionError("no kernel modules found under /lib/modules in the tree")
        deps = "".join(tree.read(f"{d}/modules.dep") or "" for d in kernel_release_dirs(tree))
        extra = outside(files, deps, allowed)
        if extra:
            raise AssertionError(f"{len(extra)} module(s) outside the allow-list: {extra[:15]}")

    def vm(host: Any) -> None:
        rc, out = vm_run(host, "cd /lib/modules/$(uname -r) && find kernel -name '*.ko*' && "
                               "echo '-- deps' && cat modules.dep")
        listed, _, deps = out.partition("-- deps")
        files = [line.strip().removeprefix("kernel/") for line in listed.splitlines()
                 if line.strip()]
        if rc != 0 or not files:
            raise AssertionError(f"cannot list the running kernel's modules: {out[:300]}")
        extra = outside(files, deps, allowed)
        if extra:
            raise AssertionError(f"{len(extra)} module(s) outside the allow-list: {extra[:15]}")

    what = "every kernel module is on the allow-list or needed by one that is"
    return [ctx.check("allowlist", "static", static, what),
            ctx.check("allowlist", "vm", vm, what)]


def describe(ctx: RuleContext, params: Params) -> str:
    lines = ["keep only these kernel modules (names, name globs, paths under kernel/) and "
             "what they need; delete the rest (manifest kernel_modules.kept lists what stays)"]
    for name, ps in params["groups"].items():
        if name not in params["without"]:
            lines.append(f"{name}: " + ", ".join(map(str, ps)))
    if params["extra"]:
        lines.append("extra: " + ", ".join(map(str, params["extra"])))
    lines.append("always (pipeline): " + ", ".join(keep(ctx)))
    return "\n".join(lines)


KIND = Kind(
    name="module_allowlist",
    params={
        "groups": Param("map", required=True,
                        help="group name -> module patterns the terminal needs"),
        "without": Param("list", default=[], help="groups not to use"),
        "extra": Param("list", default=[], help="more patterns (a site's hardware)"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
