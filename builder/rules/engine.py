"""Resolve a profile's rule selection and variables, apply rules to a plan, list checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from builder.errors import InputError
from builder.overlay import render
from builder.plan import BuildPlan
from builder.profile.model import Profile
from builder.rules.catalogue import Rule, load_catalogue
from builder.rules.check import Check
from builder.rules.kinds import KINDS, prepare
from builder.rules.kinds.base import Params, RuleContext, type_error
from builder.rules.kinds.common import fail, is_ip

T = TypeVar("T")
_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True, autoescape=False)


@dataclass(frozen=True)
class Resolved:
    rule: Rule
    ctx: RuleContext
    params: Params


def _where(profile: Profile, *keys: str) -> tuple[Path | str, int | None]:
    for key in keys:
        origin = profile.origins.get(key)
        if origin is not None:
            return origin.file, origin.line
    return profile.source, None


def _error(profile: Profile, msg: str, key: str, fallbacks: tuple[str, ...] = (),
           allowed: str | list[str] | None = None) -> InputError:
    file, line = _where(profile, key, *fallbacks)
    return InputError(msg, file=file, line=line, key=key, allowed=allowed)


def selection(profile: Profile, catalogue: dict[str, Rule] | None = None) -> list[str]:
    """Rule ids in order; `!id` drops a rule selected earlier (e.g. by a parent profile)."""
    cat = catalogue if catalogue is not None else load_catalogue()
    out: list[str] = []
    for i, entry in enumerate(profile.rules):
        rid = entry[1:] if entry.startswith("!") else entry
        if rid not in cat:
            raise _error(profile, f"unknown rule {rid!r}", f"rules.{i}", ("rules",),
                         allowed="see `auditbox rules list`")
        if entry.startswith("!"):
            out = [r for r in out if r != rid]
        elif rid not in out:
            out.append(rid)
    for rid, values in profile.rule_vars.items():
        if rid not in cat:
            raise _error(profile, f"unknown rule {rid!r}", f"rule_vars.{rid}", ("rule_vars",),
                         allowed="see `auditbox rules list`")
        if not isinstance(values, dict):
            raise _error(profile, "must map variable names to values", f"rule_vars.{rid}",
                         ("rule_vars",))
        for name in values:
            if name not in cat[rid].vars:
                raise _error(profile, f"rule {rid} has no variable {name!r}",
                             f"rule_vars.{rid}.{name}", (f"rule_vars.{rid}", "rule_vars"),
                             allowed=sorted(cat[rid].vars) or "none")
    return out


def _evaluate(value: Any, context: dict[str, Any]) -> Any:
    """Render template strings; a string that is one `{{ expr }}` keeps the expression's type."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        m = _EXPR.match(value)
        if m:
            return _ENV.compile_expression(m.group("expr").strip(),
                                           undefined_to_none=False)(**context)
        return _ENV.from_string(value).render(**context)
    if isinstance(value, list):
        return [_evaluate(v, context) for v in value]
    if isinstance(value, dict):
        return {str(_evaluate(k, context)): _evaluate(v, context) for k, v in value.items()}
    return value


def _native(value: Any) -> Any:
    """Jinja objects (e.g. a Markup or a generator) -> plain Python."""
    if isinstance(value, (str, int, bool, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_native(v) for v in value]
    return value


def resolve(rule: Rule, profile: Profile) -> Resolved:
    base: dict[str, Any] = {"profile": profile, "is_ip": is_ip, "fail": fail,
                            "rule_id": rule.id}
    overrides = profile.rule_vars.get(rule.id, {})
    values: dict[str, Any] = {}
    for name, spec in rule.vars.items():
        key = f"rule_vars.{rule.id}.{name}"
        if name in overrides:
            value = overrides[name]
        else:
            try:
                value = _native(_evaluate(spec.default, {**base, **values}))
            except jinja2.TemplateError as exc:
                raise InputError(f"default: {exc}", file=rule.source,
                                 line=rule.lines.get(f"vars.{name}.default"),
                                 key=f"vars.{name}") from exc
        problem = type_error(spec.type, value)
        if problem:
            raise _error(profile, f"{problem} (rule {rule.id})", key,
                         (f"rule_vars.{rule.id}", "rule_vars"), allowed=spec.type)
        values[name] = value
    context = {**base, **values}

    def render_overlay(template: str, **extra: Any) -> str:
        return render(template, **context, **extra)

    context["render"] = render_overlay
    try:
        raw = _native(_evaluate(rule.params, context))
        params = prepare(KINDS[rule.kind], raw)
    except (jinja2.TemplateError, ValueError) as exc:
        msg = str(exc).replace("\n", " ")
        file: Path | str = rule.source
        line = 1
        if overrides:
            file, line2 = _where(profile, f"rule_vars.{rule.id}", "rule_vars")
            line = line2 or 1
            msg = f"rule {rule.id}: {msg}"
        raise InputError(msg, file=file, line=line,
                         key=f"rule_vars.{rule.id}" if overrides else rule.kind) from exc
    return Resolved(rule, RuleContext(rule.id, profile, values), params)


def resolved_rules(profile: Profile) -> list[Resolved]:
    cat = load_catalogue()
    return [resolve(cat[rid], profile) for rid in selection(profile, cat)]


def _guard(r: Resolved, what: Callable[[], T]) -> T:
    """Run a kind's apply/checks/describe; a ValueError (e.g. a template's fail()) is bad input."""
    try:
        return what()
    except ValueError as exc:
        profile = r.ctx.profile
        raise _error(profile, f"rule {r.rule.id}: {exc}", f"rule_vars.{r.rule.id}",
                     ("rule_vars", "kiosk", "network", "rules")) from exc


def apply_rules(profile: Profile, plan: BuildPlan) -> None:
    """Add every selected rule's mechanism to plan (before the bootstrap)."""
    for r in resolved_rules(profile):
        kind = KINDS[r.rule.kind]
        _guard(r, lambda r=r, kind=kind: kind.apply(r.ctx, r.params, plan))  # type: ignore[misc]
        plan.rule_ids.append(r.rule.id)
    clash = sorted(set(plan.packages_absent) & set(plan.packages))
    clash += sorted(set(plan.packages_absent) & set(profile.packages.include))
    if clash:
        raise _error(profile, f"packages both required and forbidden by rules: "
                     f"{', '.join(sorted(set(clash)))}", "packages.include", ("packages",))
    plan.packages = sorted(set(plan.packages))


def checks(profile: Profile) -> list[Check]:
    """Every check of every selected rule; names are unique."""
    out: list[Check] = []
    for r in resolved_rules(profile):
        kind = KINDS[r.rule.kind]
        out += _guard(r, lambda r=r, kind=kind: kind.checks(r.ctx, r.params))  # type: ignore[misc]
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RuntimeError(f"duplicate check names: {dup}")
    return out


def describe(rule: Rule, profile: Profile) -> str:
    """The rendered mechanism of one rule for this profile."""
    r = resolve(rule, profile)
    return _guard(r, lambda: KINDS[rule.kind].describe(r.ctx, r.params))


def rule_checks(rule: Rule, profile: Profile) -> list[Check]:
    r = resolve(rule, profile)
    return _guard(r, lambda: KINDS[rule.kind].checks(r.ctx, r.params))
