"""module_absent: delete kernel modules from the image, plus `install /bin/false` + blacklist."""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import PurePosixPath
from typing import Any

from builder.modules import ModuleSelection, normalize
from builder.plan import BuildPlan
from builder.rules.check import Check, module_files, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay

# The image cannot boot (UKI + erofs/dm-verity under QEMU/OVMF) or filter traffic, measure,
# or take a keyboard without these: no rule may remove them.
PROTECTED = ("virtio*", "erofs", "dm_verity", "dm_mod", "dm_bufio", "nf_*", "nft_*",
             "nfnetlink*", "x_tables", "tpm*", "efivarfs", "usbhid", "hid", "hid_generic",
             "xhci*", "ehci*", "usbcore", "usb_common", "drm*", "loop", "overlay")
# What the pipeline must never delete (boot under QEMU/OVMF, verity root, firewall, TPM).
# virtio by path, not by name: sound/virtio/virtio_snd is a sound card and must go.
KEEP = ("drivers/*virtio*", "erofs", "dm-verity", "dm_verity", "dm-mod", "dm_mod", "nf_*",
        "nft_*", "tpm*", "efivarfs")


def protected(name: str) -> bool:
    return any(fnmatch.fnmatchcase(normalize(name), p) for p in PROTECTED)


def validate(params: Params) -> None:
    bad = [m for m in params["modules"] if protected(str(m))]
    if bad:
        raise ValueError(f"would remove modules the image needs to boot: {', '.join(bad)}")
    for g in params["globs"]:
        if str(g).startswith("/") or ".." in PurePosixPath(str(g)).parts:
            raise ValueError(f"glob {g!r} must be relative to /lib/modules/<ver>/kernel/")


def modules(ctx: RuleContext, params: Params) -> list[str]:
    allow = {normalize(a) for a in ctx.profile.kernel.modules.allow}
    return [str(m) for m in params["modules"] if normalize(str(m)) not in allow]


def keep(ctx: RuleContext) -> list[str]:
    """What the pipeline keeps whatever a rule removes: KEEP and the profile's allow-list."""
    return [*KEEP, *ctx.profile.kernel.modules.allow]


def selection(ctx: RuleContext, params: Params) -> ModuleSelection:
    """The module files this rule deletes, by the pipeline's own matcher."""
    return ModuleSelection(tuple([*modules(ctx, params), *map(str, params["globs"])]),
                           tuple(keep(ctx)))


def path(ctx: RuleContext) -> str:
    return f"/etc/modprobe.d/auditbox-{ctx.slug}.conf"


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/modprobe.conf.j2", modules=modules(ctx, params))


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for item in [*modules(ctx, params), *params["globs"]]:
        if item not in plan.modules_remove:
            plan.modules_remove.append(str(item))
    for kept in keep(ctx):
        if kept not in plan.modules_keep:
            plan.modules_keep.append(kept)
    plan.add_file(path(ctx), content(ctx, params), 0o644, source=ctx.rule_id)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    names = {normalize(m) for m in modules(ctx, params)}
    globs = [str(g) for g in params["globs"]]
    gone = selection(ctx, params)

    def static(target: Any) -> None:
        files = module_files(tree_of(target))
        if not files:
            raise AssertionError("no kernel modules found under /lib/modules in the tree")
        left = [f for f, rel in files.items() if gone.selects(rel)]
        if left:
            raise AssertionError(f"{len(left)} module file(s) still in the tree: {left[:10]}")

    def vm(host: Any) -> None:
        bad = []
        _, loaded = vm_run(host, "cat /proc/modules")
        loaded_names = {line.split()[0] for line in loaded.splitlines() if line.strip()}
        for m in sorted(names):
            if m in loaded_names:
                bad.append(f"{m} is loaded")
            if vm_run(host, f"modinfo -n {shlex.quote(m)}")[0] == 0:
                bad.append(f"modinfo finds {m}")
            if vm_run(host, f"modprobe -q {shlex.quote(m)}")[0] == 0:
                bad.append(f"modprobe {m} succeeded")
        if bad:
            raise AssertionError("; ".join(bad))

    return [*file_checks(ctx, "modprobe.d", path(ctx), content(ctx, params), 0o644),
            ctx.check("modules-absent", "static", static,
                      "no .ko files for " + ", ".join(sorted(names) + globs)),
            ctx.check("modules-unloadable", "vm", vm,
                      "modinfo and modprobe fail, not loaded: " + ", ".join(sorted(names)))]


def describe(ctx: RuleContext, params: Params) -> str:
    mods = modules(ctx, params)
    globs = list(params["globs"])
    return (f"delete modules {', '.join(mods)}" + (f" and {', '.join(globs)}" if globs else "")
            + f" from the image; {path(ctx)}: install <m> /bin/false, blacklist <m>")


KIND = Kind(
    name="module_absent",
    params={
        "modules": Param("list", required=True, help="module names (- and _ are equivalent)"),
        "globs": Param("list", default=[],
                       help="paths relative to /lib/modules/<ver>/kernel/, "
                            "e.g. drivers/usb/storage/*"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
