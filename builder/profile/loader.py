"""load_profile(): the single entry point from a YAML file to a validated Profile.

Everything is driven by the table in builder.profile.settings; every problem is an
InputError naming FILE:LINE and the key path.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path, PurePosixPath
from typing import Any, get_type_hints

from builder.errors import InputError
from builder.profile import validators as v
from builder.profile.merge import resolve_profile
from builder.profile.model import FileEntry, Origin, Profile, User
from builder.profile.settings import BY_KEY, SETTINGS, Kind, Setting, group_children, is_group
from builder.profile.yamlpos import Map, Scalar, Seq, YNode, type_name

_RECORD_TYPES: dict[str, type[Any]] = {"users": User, "files": FileEntry}
_NOT_SETTINGS = ("source", "origins", "sources")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fail(node: YNode, key: str, message: str,
          allowed: str | list[str] | None = None) -> InputError:
    return InputError(message, file=node.file, line=node.line, key=key, allowed=allowed)


def _expected(node: YNode, key: str, what: str, allowed: str | None = None) -> InputError:
    hint = ""
    if isinstance(node, Scalar) and not isinstance(node.value, str) and "string" in what:
        hint = " (quote it to make it a string)"
    return _fail(node, key, f"expected {what}, got {type_name(node)}{hint}", allowed)


def _unknown_key(name: str, key: str, line_node: YNode, allowed: list[str]) -> InputError:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _fail(line_node, key, f"unknown key {name!r}{hint}", allowed)


class _Loader:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, Origin] = {}

    def origin(self, key: str, node: YNode, line: int | None = None) -> None:
        self.origins[key] = Origin(node.file, line if line is not None else node.line)

    # --- groups and records -------------------------------------------------------

    def group(self, node: Map, prefix: str, table: tuple[Setting, ...],
              out: dict[str, Any]) -> None:
        allowed = group_children(self._table_key(prefix), table)
        for name, entry in node.entries.items():
            key = _join(prefix, name)
            if name not in allowed:
                line_node = Scalar(name, name, entry.file, entry.key_line)
                raise _unknown_key(name, key, line_node, allowed)
            self.origins[key] = Origin(entry.file, entry.key_line)
            table_key = self._table_key(key)
            if is_group(table_key, table):
                if not isinstance(entry.node, Map):
                    keys = ", ".join(group_children(table_key, table))
                    raise _expected(entry.node, key, "a mapping", keys)
                self.group(entry.node, key, table, out)
            else:
                setting = next(s for s in table if s.key == table_key)
                out[table_key] = self.convert(setting, entry.node, key)
        for s in table:
            parent = s.key.rsplit(".", 1)[0] if "." in s.key else ""
            if s.required and parent == self._table_key(prefix) and s.key not in out:
                where = _join(prefix, s.name)
                raise _fail(node, where, f"required key {s.name!r} is missing")

    # record fields are keyed "users[0].name" for display but "name" in their table
    def _table_key(self, key: str) -> str:
        return key.split("]", 1)[1].lstrip(".") if "]" in key else key

    def record(self, setting: Setting, node: YNode, key: str) -> Any:
        if not isinstance(node, Map):
            keys = ", ".join(f.name for f in setting.fields)
            raise _expected(node, key, f"a {setting.name.removesuffix('s')} mapping", keys)
        out: dict[str, Any] = {}
        self.group(node, key, setting.fields, out)
        kwargs = {f.name: out.get(f.name, copy.deepcopy(f.default)) for f in setting.fields}
        if setting.key == "files":
            kwargs["path"] = PurePosixPath(kwargs["path"])
        return _RECORD_TYPES[setting.key](**kwargs)

    # --- values --------------------------------------------------------------------

    def convert(self, s: Setting, node: YNode, key: str) -> Any:
        if s.nullable and isinstance(node, Scalar) and node.value is None:
            return None
        allowed = s.allowed()
        if s.kind is Kind.STR:
            return self.string(s, node, key)
        if s.kind in (Kind.INT, Kind.MODE):
            value = self.integer(s, node, key)
            lo, hi = s.minimum, s.maximum
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                shown = f"0{value:o}" if s.kind is Kind.MODE else str(value)
                raise _fail(node, key, f"{shown} is out of range", allowed)
            return value
        if s.kind is Kind.BOOL:
            if (not isinstance(node, Scalar) or not isinstance(node.value, bool)
                    or node.raw.lower() not in ("true", "false")):
                raise _expected(node, key, "a boolean (true or false)")
            return node.value
        if s.kind is Kind.ENUM:
            if not isinstance(node, Scalar) or not isinstance(node.value, str):
                raise _expected(node, key, "a string", allowed)
            if node.value not in s.choices:
                raise _fail(node, key, f"{node.value!r} is not allowed", allowed)
            return node.value
        if s.kind is Kind.LIST:
            return self.str_list(s, node, key)
        if s.kind is Kind.RECORDS:
            return self.records(s, node, key)
        if s.kind is Kind.RULE_VARS:
            return self.rule_vars(node, key)
        raise _fail(node, key, "this key is handled by extends resolution")  # pragma: no cover

    def string(self, s: Setting, node: YNode, key: str) -> str:
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            raise _expected(node, key, "a string", s.allowed())
        value = node.value
        if not s.multiline and s.check is None and ("\n" in value or "\r" in value):
            raise _fail(node, key, "newlines are not allowed")
        if s.check is not None:
            problem = s.check(value)
            if problem:
                raise _fail(node, key, problem, s.check.describe)
        return value

    def integer(self, s: Setting, node: YNode, key: str) -> int:
        if s.kind is Kind.MODE:
            if isinstance(node, Scalar) and isinstance(node.value, str):
                mode = v.parse_mode(node.value)
                if mode is None:
                    raise _fail(node, key, f"{node.value!r} is not an octal mode",
                                'octal like "0644" or "0o755"')
                return mode
            if (isinstance(node, Scalar) and isinstance(node.value, int)
                    and not isinstance(node.value, bool)
                    and node.value > 7 and not node.raw.startswith("0")):
                raise _fail(node, key, f"mode {node.raw} is decimal; write it in octal "
                            f"with a leading 0, like 0{node.raw} or \"0{node.raw}\"")
        if (not isinstance(node, Scalar) or not isinstance(node.value, int)
                or isinstance(node.value, bool)):
            raise _expected(node, key, "an integer", s.allowed())
        return node.value

    def str_list(self, s: Setting, node: YNode, key: str) -> list[str]:
        if not isinstance(node, Seq):
            raise _expected(node, key, "a list of strings", s.allowed())
        out: list[str] = []
        for i, item in enumerate(node.items):
            item_key = f"{key}[{i}]"
            if not isinstance(item, Scalar) or not isinstance(item.value, str):
                raise _expected(item, key, "a string item", s.allowed())
            self.origin(item_key, item)
            if s.choices and item.value not in s.choices:
                raise _fail(item, key, f"{item.value!r} is not allowed", s.allowed())
            if s.check is not None:
                problem = s.check(item.value)
                if problem:
                    raise _fail(item, key, problem, s.check.describe)
            if item.value not in out:
                out.append(item.value)
        if len(out) < s.min_items:
            raise _fail(node, key, f"needs at least {s.min_items} item(s)", s.allowed())
        return out

    def records(self, s: Setting, node: YNode, key: str) -> list[Any]:
        if not isinstance(node, Seq):
            raise _expected(node, key, s.type_text())
        out: list[Any] = []
        seen_uids: dict[int, int] = {}
        for i, item in enumerate(node.items):
            item_key = f"{key}[{i}]"
            self.origin(item_key, item)
            record = self.record(s, item, item_key)
            if isinstance(record, User):
                if record.uid in seen_uids:
                    uid_node = item.entries["uid"].node if isinstance(item, Map) else item
                    first = seen_uids[record.uid]
                    raise _fail(uid_node, f"{item_key}.uid",
                                f"uid {record.uid} is already used by users[{first}]")
                seen_uids[record.uid] = i
            out.append(record)
        return out

    def rule_vars(self, node: YNode, key: str) -> dict[str, dict[str, object]]:
        if not isinstance(node, Map):
            raise _expected(node, key, "a mapping of rule id to variables")
        out: dict[str, dict[str, object]] = {}
        for rule, entry in node.entries.items():
            rule_key = f"{key}.{rule}"
            key_node = Scalar(rule, rule, entry.file, entry.key_line)
            problem = v.RULE_ID(rule)
            if problem:
                raise _fail(key_node, rule_key, problem, v.RULE_ID.describe)
            self.origin(rule_key, key_node)
            if not isinstance(entry.node, Map):
                raise _expected(entry.node, rule_key, "a mapping of variable name to value")
            out[rule] = {}
            for var, var_entry in entry.node.entries.items():
                var_key = f"{rule_key}.{var}"
                var_node = Scalar(var, var, var_entry.file, var_entry.key_line)
                problem = v.VAR_NAME(var)
                if problem:
                    raise _fail(var_node, var_key, problem, v.VAR_NAME.describe)
                self.origin(var_key, var_node)
                out[rule][var] = self.rule_value(var_entry.node, var_key)
        return out

    def rule_value(self, node: YNode, key: str) -> object:
        what = "a scalar or a list of scalars"
        if isinstance(node, Scalar) and node.value is not None:
            return node.value
        if isinstance(node, Seq):
            values: list[object] = []
            for i, item in enumerate(node.items):
                if not isinstance(item, Scalar) or item.value is None:
                    raise _expected(item, key, "a scalar list item")
                self.origin(f"{key}[{i}]", item)
                values.append(item.value)
            return values
        raise _expected(node, key, what)


def _build(cls: type[Any], prefix: str, values: dict[str, Any], **extra: Any) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = dict(extra)
    for f in dataclasses.fields(cls):
        if f.name in _NOT_SETTINGS:
            continue
        key = _join(prefix, f.name)
        if key in BY_KEY:
            kwargs[f.name] = values[key] if key in values else copy.deepcopy(BY_KEY[key].default)
        elif is_group(key):
            kwargs[f.name] = _build(hints[f.name], key, values)
        else:  # pragma: no cover - caught by the table/model consistency test
            raise RuntimeError(f"model field {key} has no entry in the settings table")
    return cls(**kwargs)


def load_profile(path: Path | str) -> Profile:
    """Load, merge (extends) and validate a profile; raise InputError on any problem."""
    path = Path(path)
    tree, sources = resolve_profile(path)
    loader = _Loader()
    loader.group(tree, "", SETTINGS, loader.values)
    profile: Profile = _build(Profile, "", loader.values, source=path,
                              origins=loader.origins, sources=sources)
    return profile


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in _NOT_SETTINGS}
    if isinstance(value, list | tuple):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {str(k): _plain(x) for k, x in value.items()}
    if isinstance(value, PurePosixPath | Path):
        return str(value)
    return value


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """The resolved profile as plain JSON-able data (no origins, source or sources)."""
    result: dict[str, Any] = _plain(profile)
    return result
