"""module_absent: delete kernel modules from the image, plus `install /bin/false` + blacklist.

`families` names groups of drivers by what they are (SD card readers, cellular modems, ...)
with builder/modules.py patterns: directories and name globs, so that a driver a new kernel
adds or renames in the same place still matches. Each family gets its own checks.
"""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import PurePosixPath
from typing import Any

from builder.module_trim import check_patterns
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
# virtio by path, not by name: sound/virtio/virtio_snd is a sound card and must go. The
# firewall by what nftables uses: not the conntrack helpers (FTP, SIP, ...) or the bridge.
KEEP = ("drivers/*virtio*", "erofs", "dm-verity", "dm_verity", "dm-mod", "dm_mod",
        "nf_tables", "nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_reject_ipv4",
        "nf_reject_ipv6", "nfnetlink", "net/netfilter/nft_*", "net/ipv4/netfilter/nft_*",
        "net/ipv6/netfilter/nft_*", "tpm*", "efivarfs")


def protected(name: str) -> bool:
    return any(fnmatch.fnmatchcase(normalize(name), p) for p in PROTECTED)


def is_name(pattern: str) -> bool:
    """A plain module name (modprobe can blacklist it), not a path or a glob."""
    return not any(c in pattern for c in "/*?[")


def validate(params: Params) -> None:
    names = [str(m) for m in params["modules"]]
    for family, patterns in params["families"].items():
        if not isinstance(patterns, list) or not patterns:
            raise ValueError(f"family {family}: needs a list of module patterns")
        names += [str(p) for p in patterns if is_name(str(p))]
        check_patterns(map(str, patterns))
    bad = [m for m in names if protected(m)]
    if bad:
        raise ValueError(f"would remove modules the image needs to boot: {', '.join(bad)}")
    paths = [*params["globs"], *(p for ps in params["families"].values() for p in ps)]
    for g in paths:
        if str(g).startswith("/") or ".." in PurePosixPath(str(g)).parts:
            raise ValueError(f"glob {g!r} must be relative to /lib/modules/<ver>/kernel/")


def modules(ctx: RuleContext, params: Params) -> list[str]:
    """Plain names to fence in modprobe.d: `modules` and the families' plain names."""
    allow = {normalize(a) for a in ctx.profile.kernel.modules.allow}
    names = [str(m) for m in params["modules"]]
    names += [str(p) for ps in params["families"].values() for p in ps
              if is_name(str(p)) and str(p) not in names]
    return [m for m in names if normalize(m) not in allow]


def family_patterns(params: Params) -> list[str]:
    return [str(p) for ps in params["families"].values() for p in ps if not is_name(str(p))]


def keep(ctx: RuleContext) -> list[str]:
    """What the pipeline keeps whatever a rule removes: KEEP and the profile's allow-list."""
    return [*KEEP, *ctx.profile.kernel.modules.allow]


def selection(ctx: RuleContext, params: Params) -> ModuleSelection:
    """The module files this rule deletes, by the pipeline's own matcher."""
    return ModuleSelection(tuple([*modules(ctx, params), *map(str, params["globs"]),
                                  *family_patterns(params)]), tuple(keep(ctx)))


def path(ctx: RuleContext) -> str:
    return f"/etc/modprobe.d/auditbox-{ctx.slug}.conf"


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/modprobe.conf.j2", modules=modules(ctx, params))


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for item in [*modules(ctx, params), *params["globs"], *family_patterns(params)]:
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

    out = [*file_checks(ctx, "modprobe.d", path(ctx), content(ctx, params), 0o644),
           ctx.check("modules-absent", "static", static,
                     "no .ko files for " + ", ".join(sorted(names) + globs)),
           ctx.check("modules-unloadable", "vm", vm,
                     "modinfo and modprobe fail, not loaded: " + ", ".join(sorted(names)))]
    for family, patterns in params["families"].items():
        out += family_checks(ctx, str(family), [str(p) for p in patterns])
    return out


VM_MODULES = ("cd /lib/modules/$(uname -r) && find . -name '*.ko*' | sed 's|^\\./||' && "
              "echo '-- loaded' && cut -d' ' -f1 /proc/modules")


def family_checks(ctx: RuleContext, family: str, patterns: list[str]) -> list[Check]:
    """No module file of the family in the tree; none on the VM, none loaded."""
    gone = ModuleSelection(tuple(patterns), tuple(keep(ctx)))
    what = f"family {family}: no module matching " + ", ".join(patterns)

    def static(target: Any) -> None:
        files = module_files(tree_of(target))
        if not files:
            raise AssertionError("no kernel modules found under /lib/modules in the tree")
        left = sorted(rel for rel in files.values() if gone.selects(rel))
        if left:
            raise AssertionError(f"{family}: {len(left)} driver(s) still in the tree: "
                                 f"{left[:10]}")

    def vm(host: Any) -> None:
        rc, out = vm_run(host, VM_MODULES)
        listed, _, loaded = out.partition("-- loaded")
        files = [line.strip().removeprefix("kernel/") for line in listed.splitlines()
                 if line.strip()]
        if rc != 0 or not files:
            raise AssertionError(f"cannot list the running kernel's modules: {out[:300]}")
        left = [f for f in files if gone.selects(f)]
        left += [f"{m} (loaded)" for m in loaded.split() if gone.selects(f"loaded/{m}.ko")]
        if left:
            raise AssertionError(f"{family}: {left[:10]}")

    return [ctx.check(f"family-{family}", "static", static, what),
            ctx.check(f"family-{family}", "vm", vm, what)]


def describe(ctx: RuleContext, params: Params) -> str:
    mods = modules(ctx, params)
    globs = list(params["globs"])
    text = (f"delete modules {', '.join(mods)}" + (f" and {', '.join(globs)}" if globs else "")
            + f" from the image; {path(ctx)}: install <m> /bin/false, blacklist <m>")
    for family, patterns in params["families"].items():
        text += f"\nfamily {family}: " + ", ".join(str(p) for p in patterns)
    return text


KIND = Kind(
    name="module_absent",
    params={
        "modules": Param("list", default=[], help="module names (- and _ are equivalent)"),
        "globs": Param("list", default=[],
                       help="paths relative to /lib/modules/<ver>/kernel/, "
                            "e.g. drivers/usb/storage/*"),
        "families": Param("map", default={},
                          help="family name -> module patterns (names, name globs, paths "
                               "under kernel/); each family is checked on its own"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
