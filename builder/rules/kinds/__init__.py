"""The registry of rule kinds. A kind turns a rule's parameters into plan entries and checks."""

from __future__ import annotations

from builder.rules.kinds import (
    check_only,
    composite,
    file,
    kernel_cmdline,
    logind,
    module_absent,
    module_allowlist,
    nftables,
    package_absent,
    package_present,
    setid,
    sysctl,
    systemd_unit,
    udev_rule,
    usbguard,
)
from builder.rules.kinds.base import Kind, Params, type_error, with_defaults

KINDS: dict[str, Kind] = {k.name: k for k in (
    kernel_cmdline.KIND, sysctl.KIND, module_absent.KIND, udev_rule.KIND, usbguard.KIND,
    systemd_unit.KIND, logind.KIND, package_absent.KIND, package_present.KIND, file.KIND,
    nftables.KIND, check_only.KIND, composite.KIND, setid.KIND, module_allowlist.KIND,
)}


def unknown_params(kind: Kind, params: Params) -> list[str]:
    """Parameter names the kind does not know (composite parts checked recursively)."""
    bad = [k for k in params if k not in kind.params]
    if kind.name == "composite" and isinstance(params.get("parts"), list):
        for i, part in enumerate(params["parts"]):
            if isinstance(part, dict) and part.get("kind") in KINDS:
                sub = {k: v for k, v in part.items() if k not in ("kind", "when")}
                bad += [f"parts.{i}.{k}" for k in unknown_params(KINDS[part["kind"]], sub)]
    return bad


def missing_params(kind: Kind, params: Params) -> list[str]:
    return [k for k, spec in kind.params.items() if spec.required and k not in params]


def prepare(kind: Kind, params: Params) -> Params:
    """Resolved params -> params with defaults, type-checked and validated (ValueError)."""
    bad = unknown_params(kind, params)
    if bad:
        raise ValueError(f"unknown parameters for kind {kind.name}: {', '.join(bad)} "
                         f"(allowed: {', '.join(kind.params)})")
    missing = missing_params(kind, params)
    if missing:
        raise ValueError(f"kind {kind.name} needs {', '.join(missing)}")
    out = with_defaults(kind, params)
    for name, spec in kind.params.items():
        err = type_error(spec.type, out.get(name))
        if err:
            raise ValueError(f"{name}: {err}")
    if kind.validate is not None:
        kind.validate(out)
    return out


__all__ = ["KINDS", "Kind", "missing_params", "prepare", "unknown_params"]
