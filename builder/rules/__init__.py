"""Hardening rules: a YAML catalogue (profiles/rules/), kinds that turn rules into plan
entries, and the checks that prove them on the built tree (static) and the running VM.

Public API:
    load_catalogue() -> dict[str, Rule]
    apply_rules(profile, plan) -> None
    checks(profile) -> list[Check]
"""

from builder.rules.catalogue import Rule, VarSpec, load_catalogue
from builder.rules.check import Check
from builder.rules.engine import apply_rules, checks, describe, rule_checks, selection

__all__ = ["Check", "Rule", "VarSpec", "apply_rules", "checks", "describe", "load_catalogue",
           "rule_checks", "selection"]
