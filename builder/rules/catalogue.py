"""The rule catalogue: one strict YAML file per rule under profiles/rules/<id>.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from builder import paths
from builder.errors import InputError
from builder.rules.kinds import KINDS, missing_params, unknown_params
from builder.rules.kinds.base import TYPES, type_error

RULES_DIR = paths.RULES
SEVERITIES = ("low", "medium", "high")
REFERENCE_KEYS = ("cis", "stig", "kspp", "kicksecure", "ssg")
RULE_KEYS = ("id", "title", "rationale", "severity", "references", "kind", "vars")
VAR_KEYS = ("type", "default", "help")
VAR_TYPES = ("str", "int", "bool", "list", "map")


@dataclass(frozen=True)
class VarSpec:
    name: str
    type: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    rationale: str
    severity: str
    kind: str
    params: dict[str, Any]
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vars: dict[str, VarSpec] = field(default_factory=dict)
    source: Path = RULES_DIR
    lines: dict[str, int] = field(default_factory=dict)   # key path -> 1-based line


def to_python(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    """Convert a composed YAML node, recording the line of every key path."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = str(yaml.safe_load(yaml.serialize(knode)))
            sub = f"{path}.{key}" if path else key
            lines[sub] = knode.start_mark.line + 1
            if key in out:
                raise InputError("duplicate key", line=lines[sub], key=sub)
            out[key] = to_python(vnode, sub, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [to_python(v, f"{path}.{i}", lines) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def parse_rule(path: Path) -> Rule:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(path.read_text())
        data = to_python(node, "", lines) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path,
                         line=mark.line + 1 if mark else None) from exc
    except InputError as exc:
        exc.file = str(path)
        raise

    def err(msg: str, key: str | None = None, allowed: str | list[str] | None = None) -> InputError:
        return InputError(msg, file=path, line=lines.get(key or "", 1), key=key, allowed=allowed)

    if not isinstance(data, dict):
        raise err("a rule file must be a mapping")
    for k in ("id", "title", "rationale", "severity", "kind"):
        if not isinstance(data.get(k), str) or not data[k].strip():
            raise err(f"required text field {k} missing or empty", k if k in data else None)
    if data["id"] != path.stem:
        raise err(f"id {data['id']!r} must match the file name {path.stem!r}", "id")
    if data["severity"] not in SEVERITIES:
        raise err(f"unknown severity {data['severity']!r}", "severity", list(SEVERITIES))
    kind = KINDS.get(data["kind"])
    if kind is None:
        raise err(f"unknown kind {data['kind']!r}", "kind", sorted(KINDS))
    params = {k: v for k, v in data.items() if k not in RULE_KEYS}
    unknown = unknown_params(kind, params)
    if unknown:
        first = unknown[0]
        raise err(f"unknown key {first!r} for kind {kind.name}", first,
                  [*RULE_KEYS, *kind.params])
    missing = missing_params(kind, params)
    if missing:
        raise err(f"kind {kind.name} needs {', '.join(missing)}")
    for name, value in params.items():
        problem = None if _is_template(value) else type_error(kind.params[name].type, value)
        if problem:
            raise err(problem, name)
    if kind.name == "composite":
        for i, part in enumerate(params["parts"]):
            if not isinstance(part, dict) or part.get("kind") not in KINDS:
                raise err("unknown kind", f"parts.{i}.kind", sorted(KINDS))
            sub = {k: v for k, v in part.items() if k not in ("kind", "when")}
            miss = missing_params(KINDS[part["kind"]], sub)
            if miss:
                raise err(f"kind {part['kind']} needs {', '.join(miss)}", f"parts.{i}")

    refs_raw = data.get("references") or {}
    if not isinstance(refs_raw, dict):
        raise err("references must be a mapping", "references")
    refs: dict[str, tuple[str, ...]] = {}
    for key, names in refs_raw.items():
        if key not in REFERENCE_KEYS:
            raise err(f"unknown reference source {key!r}", f"references.{key}",
                      list(REFERENCE_KEYS))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise err("must be a list of names", f"references.{key}")
        refs[key] = tuple(names)

    vars_raw = data.get("vars") or {}
    if not isinstance(vars_raw, dict):
        raise err("vars must be a mapping", "vars")
    variables: dict[str, VarSpec] = {}
    for name, spec in vars_raw.items():
        key = f"vars.{name}"
        if not isinstance(spec, dict):
            raise err("a var is {type, default, help}", key)
        extra = [k for k in spec if k not in VAR_KEYS]
        if extra:
            raise err(f"unknown key {extra[0]!r}", f"{key}.{extra[0]}", list(VAR_KEYS))
        vtype = spec.get("type")
        if vtype not in VAR_TYPES:
            raise err(f"unknown var type {vtype!r}", f"{key}.type", list(VAR_TYPES))
        if "default" not in spec:
            raise err("a var needs a default", key)
        default = spec["default"]
        problem = None if _is_template(default) else type_error(str(vtype), default)
        if problem:
            raise err(problem, f"{key}.default")
        variables[name] = VarSpec(name, str(vtype), default, str(spec.get("help", "")))

    return Rule(id=data["id"], title=data["title"].strip(), rationale=data["rationale"].strip(),
                severity=data["severity"], kind=kind.name, params=params, references=refs,
                vars=variables, source=path, lines=lines)


def load_catalogue(directory: Path | None = None) -> dict[str, Rule]:
    """Every rule file in directory (default profiles/rules), keyed by id, sorted."""
    if directory is None:
        return dict(_default_catalogue())
    return _load(directory)


@cache
def _default_catalogue() -> dict[str, Rule]:
    return _load(RULES_DIR)


def _load(directory: Path) -> dict[str, Rule]:
    rules = [parse_rule(p) for p in sorted(directory.glob("*.yaml"))]
    return {r.id: r for r in rules}


assert set(VAR_TYPES) <= set(TYPES)
