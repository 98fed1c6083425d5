"""YAML loading that keeps the file and line of every key and value.

Only plain YAML is accepted: SafeLoader, one document, a mapping at the top,
string keys, no duplicate keys, no anchors, aliases, merge keys or explicit tags.
Every problem is an InputError naming FILE:LINE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from builder.errors import InputError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32

FILE_KEY = "(file)"
SYNTAX_KEY = "(yaml)"

ScalarValue = str | int | float | bool | None

_STR_TAG = "tag:yaml.org,2002:str"
_CONSTRUCTED_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")
)


@dataclass
class Scalar:
    value: ScalarValue
    raw: str            # the text as written (for octal modes, messages)
    file: Path
    line: int


@dataclass
class Seq:
    items: list[YNode]
    file: Path
    line: int


@dataclass
class Entry:
    """One `key: value` pair; file and key_line are where the key was written."""

    file: Path
    key_line: int
    node: YNode


@dataclass
class Map:
    entries: dict[str, Entry]
    file: Path
    line: int


YNode = Scalar | Seq | Map


def type_name(node: YNode) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({node.raw})"
    if isinstance(v, int):
        return f"an integer ({node.raw})"
    if isinstance(v, float):
        return f"a number ({node.raw})"
    text = str(v)
    return f"a string ({text[:40] + '...' if len(text) > 40 else text!r})"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases, explicit tags and deep nesting."""

    def __init__(self, stream: str, file: Path) -> None:
        super().__init__(stream)
        self._file = file
        self._depth = 0

    def _fail(self, event: Any, what: str) -> InputError:
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        return InputError(what, file=self._file, line=line, key=SYNTAX_KEY)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            raise self._fail(event, f"aliases (*{event.anchor}) are not allowed")
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise self._fail(event, f"anchors (&{event.anchor}) are not allowed")
        if isinstance(event, ScalarEvent | CollectionStartEvent) and event.tag is not None:
            raise self._fail(event, f"explicit tags ({event.tag}) are not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._fail(event, f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _read_text(path: Path, what: str = "profile") -> str:
    try:
        if path.is_dir():
            raise InputError(f"is a directory, not a {what} file", file=path, line=1,
                             key=FILE_KEY)
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=path, line=1,
                         key=FILE_KEY) from None
    if len(data) > MAX_BYTES:
        raise InputError(f"file larger than {MAX_BYTES} bytes", file=path, line=1, key=FILE_KEY)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", file=path, line=line, key=FILE_KEY) from None
    return text.removeprefix("\ufeff")


def _mark_line(err: yaml.YAMLError) -> int:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    return 1


def _syntax_message(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        parts = [p for p in (err.context, err.problem) if p]
        text = "; ".join(parts) or "syntax error"
    elif isinstance(err, yaml.reader.ReaderError):
        text = f"character U+{err.character:04X} is not allowed"
    else:
        text = "syntax error"
    return "YAML syntax error: " + " ".join(text.split())


def load_yaml(path: Path, what: str = "profile") -> Map:
    """Parse one profile (or other ``what``) file into a positioned tree (top level is a Map)."""
    text = _read_text(path, what)
    try:
        loader = _StrictLoader(text, path)
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise InputError(_syntax_message(e), file=path, line=line, key=SYNTAX_KEY) from None
    try:
        first = loader.get_node() if loader.check_node() else None
        if loader.check_node():
            extra = loader.get_node()
            line = extra.start_mark.line + 1 if extra is not None else 1
            raise InputError(f"more than one YAML document (---) in a {what}",
                             file=path, line=line, key=SYNTAX_KEY)
        if first is None:
            raise InputError(f"empty {what} (no YAML document)", file=path, line=1,
                             key=FILE_KEY)
        tree = _convert(loader, first, path)
    except yaml.YAMLError as e:
        raise InputError(_syntax_message(e), file=path, line=_mark_line(e),
                         key=SYNTAX_KEY) from None
    except RecursionError:
        raise InputError("nesting too deep", file=path, line=1, key=SYNTAX_KEY) from None
    finally:
        loader.dispose()
    if not isinstance(tree, Map):
        if isinstance(tree, Scalar) and tree.value is None:
            raise InputError(f"empty {what} (document is null)", file=path, line=tree.line,
                             key=FILE_KEY)
        raise InputError(f"the top level must be a mapping of settings, got {type_name(tree)}",
                         file=path, line=tree.line, key="(top-level)")
    return tree


def _convert(loader: _StrictLoader, node: Node, file: Path, path: str = "") -> YNode:
    line = node.start_mark.line + 1
    if isinstance(node, ScalarNode):
        if node.tag in _CONSTRUCTED_TAGS:
            value: ScalarValue = loader.construct_object(node, deep=True)
        else:  # timestamps, "=" (the value tag): keep the text as written
            value = str(node.value)
        if not isinstance(value, str | int | float | bool | type(None)):
            raise InputError(f"unsupported value type {type(value).__name__}",
                             file=file, line=line, key=path or SYNTAX_KEY)
        return Scalar(value, str(node.value), file, line)
    if isinstance(node, SequenceNode):
        items = [_convert(loader, item, file, f"{path}[{i}]")
                 for i, item in enumerate(node.value)]
        return Seq(items, file, line)
    if isinstance(node, MappingNode):
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            where = path or "(top-level)"
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, ScalarNode) else "(collection)"
                raise InputError(f"key {shown!r} is not a string (quote it)", file=file,
                                 line=key_line, key=where)
            key = str(key_node.value)
            child_path = f"{path}.{key}" if path else key
            if key in entries:
                first = entries[key].key_line
                raise InputError(f"duplicate key (first written on line {first})", file=file,
                                 line=key_line, key=child_path)
            entries[key] = Entry(file, key_line, _convert(loader, value_node, file, child_path))
        return Map(entries, file, line)
    raise InputError("unsupported YAML node", file=file, line=line, key=path or SYNTAX_KEY)
