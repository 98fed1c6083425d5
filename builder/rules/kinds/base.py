"""What every kind provides: a parameter schema, apply (adds to the plan), checks, describe."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.plan import BuildPlan
from builder.profile.model import Profile
from builder.rules.check import Check

# parameter types a rule file may give; checked after templating
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "list": (list,),
    "map": (dict,),
    "any": (object,),
}


@dataclass(frozen=True)
class Param:
    type: str
    required: bool = False
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
class RuleContext:
    """A selected rule as a kind sees it: id, resolved variables, the profile."""

    rule_id: str
    profile: Profile
    vars: Mapping[str, Any] = field(default_factory=dict)
    prefix: str = ""                  # set by composite: distinguishes its parts' checks
    instance: str = ""                # set by composite when a kind appears more than once

    @property
    def slug(self) -> str:
        """Unique per rule part: names the files a kind writes (rule id [+ -instance])."""
        return f"{self.rule_id}-{self.instance}" if self.instance else self.rule_id

    def check(self, name: str, where: str, run: Callable[[Any], None],
              description: str = "") -> Check:
        """A check named `<rule>:<prefix><name>:<where>` (unique within a rule)."""
        assert where in ("static", "vm")
        return Check(self.rule_id, f"{self.rule_id}:{self.prefix}{name}:{where}",
                     where, run, description)  # type: ignore[arg-type]


Params = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    name: str
    params: Mapping[str, Param]
    apply: Callable[[RuleContext, Params, BuildPlan], None]
    checks: Callable[[RuleContext, Params], list[Check]]
    describe: Callable[[RuleContext, Params], str]
    # validate resolved params beyond types (raise ValueError with a message)
    validate: Callable[[Params], None] | None = None


def with_defaults(kind: Kind, params: Params) -> Params:
    out = dict(params)
    for name, spec in kind.params.items():
        if name not in out and not spec.required:
            out[name] = spec.default
    return out


def type_error(expected: str, value: Any) -> str | None:
    if value is None:
        return None
    ok = TYPES[expected]
    if expected == "int" and isinstance(value, bool):
        return f"expected int, got {type(value).__name__}"
    if not isinstance(value, ok):
        return f"expected {expected}, got {type(value).__name__}"
    return None
