"""`extends:` resolution and merging of positioned YAML trees.

The rules are documented in builder.profile.settings.MERGE_RULES (and printed by
`auditbox profile schema`). Every merged node keeps the file and line where it was
written, so later errors and Profile.origins point at the right place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from builder import paths
from builder.errors import InputError
from builder.profile.settings import BY_KEY, Kind
from builder.profile.yamlpos import Entry, Map, Scalar, Seq, YNode, load_yaml, type_name

MAX_FILES = 64
MAX_DEPTH = 16
EXTENDS = "extends"
SHIPPED_PROFILES = paths.PROFILES


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_removal(node: YNode) -> str | None:
    if isinstance(node, Scalar) and isinstance(node.value, str) and node.value.startswith("!"):
        return node.value[1:]
    return None


def _same_scalar(a: YNode, b: YNode) -> bool:
    return (isinstance(a, Scalar) and isinstance(b, Scalar)
            and type(a.value) is type(b.value) and a.value == b.value)


def _removal_error(item: Scalar, target: str, key: str, present: list[str]) -> InputError:
    shown = present[:20] + (["..."] if len(present) > 20 else [])
    return InputError(f"{item.value!r} removes {target!r}, but no inherited item is {target!r}",
                      file=item.file, line=item.line, key=key, allowed=shown or None)


def _merge_set_list(parent: Seq | None, child: Seq, key: str) -> Seq:
    items: list[YNode] = list(parent.items) if parent else []
    for item in child.items:
        target = _is_removal(item)
        if target is not None:
            assert isinstance(item, Scalar)
            kept = [p for p in items if not (isinstance(p, Scalar) and p.value == target)]
            if len(kept) == len(items):
                present = [str(p.value) for p in items if isinstance(p, Scalar)]
                raise _removal_error(item, target, key, present)
            items = kept
        elif not any(_same_scalar(p, item) for p in items):
            items.append(item)
    return Seq(items, child.file, child.line)


def _identity(node: YNode, ident: str) -> object:
    if isinstance(node, Map) and ident in node.entries:
        value = node.entries[ident].node
        if isinstance(value, Scalar):
            return value.value
    return None


def _merge_records(parent: Seq | None, child: Seq, key: str, ident: str) -> Seq:
    items: list[YNode] = list(parent.items) if parent else []
    for item in child.items:
        target = _is_removal(item)
        if target is not None:
            assert isinstance(item, Scalar)
            kept = [p for p in items if _identity(p, ident) != target]
            if len(kept) == len(items):
                present = [str(_identity(p, ident)) for p in items]
                raise _removal_error(item, target, key, present)
            items = kept
            continue
        name = _identity(item, ident)
        for i, old in enumerate(items):
            if name is None or _identity(old, ident) != name:
                continue
            if old.file == item.file and old.line == item.line:
                break                              # the same item reached twice (diamond)
            if old.file == item.file:
                raise InputError(f"{ident} {name!r} is defined twice (first on line {old.line})",
                                 file=item.file, line=item.line, key=key)
            items[i] = item                        # the child's item replaces the inherited one
            break
        else:
            items.append(item)
    return Seq(items, child.file, child.line)


def merge_node(parent: YNode | None, child: YNode, key: str) -> YNode:
    setting = BY_KEY.get(key)
    if isinstance(child, Map):
        return merge_maps(parent if isinstance(parent, Map) else None, child, key)
    if isinstance(child, Seq) and setting is not None:
        inherited = parent if isinstance(parent, Seq) else None
        if setting.kind is Kind.LIST:
            return _merge_set_list(inherited, child, key)
        if setting.kind is Kind.RECORDS and setting.identity:
            return _merge_records(inherited, child, key, setting.identity)
    return child


def merge_maps(parent: Map | None, child: Map, path: str = "") -> Map:
    """Merge child on top of parent (which may be None: then removals are refused)."""
    entries: dict[str, Entry] = dict(parent.entries) if parent else {}
    for key, entry in child.entries.items():
        old = entries.get(key)
        merged = merge_node(old.node if old else None, entry.node, _join(path, key))
        entries[key] = Entry(entry.file, entry.key_line, merged)
    return Map(entries, child.file, child.line)


@dataclass
class _Resolver:
    cache: dict[str, Map] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def resolve(self, path: Path, chain: tuple[tuple[str, Path], ...]) -> Map:
        real = os.path.realpath(path)
        if real in self.cache:
            return self.cache[real]
        if len(self.cache) >= MAX_FILES:
            raise InputError(f"more than {MAX_FILES} profile files", file=path, line=1,
                             key=EXTENDS)
        tree = load_yaml(path)
        chain = (*chain, (real, path))
        parents: Map | None = None
        for parent_path, item in self._parents(tree, path):
            parent_real = os.path.realpath(parent_path)
            names = [str(p) for r, p in chain]
            if parent_real in (r for r, _ in chain):
                start = [r for r, _ in chain].index(parent_real)
                cycle = " -> ".join([*names[start:], str(parent_path)])
                raise InputError(f"extends cycle: {cycle}", file=item.file, line=item.line,
                                 key=EXTENDS)
            if len(chain) >= MAX_DEPTH:
                raise InputError(f"extends nested deeper than {MAX_DEPTH} files",
                                 file=item.file, line=item.line, key=EXTENDS)
            resolved = self.resolve(parent_path, chain)
            parents = resolved if parents is None else merge_maps(parents, resolved)
        own = Map({k: e for k, e in tree.entries.items() if k != EXTENDS}, tree.file, tree.line)
        result = merge_maps(parents, own)
        self.cache[real] = result
        self.sources.append(path)
        return result

    def _parents(self, tree: Map, path: Path) -> list[tuple[Path, Scalar]]:
        entry = tree.entries.get(EXTENDS)
        if entry is None:
            return []
        node = entry.node
        if isinstance(node, Scalar) and node.value is None:
            return []
        items = node.items if isinstance(node, Seq) else [node]
        found: list[tuple[Path, Scalar]] = []
        for item in items:
            if not isinstance(item, Scalar) or not isinstance(item.value, str) or not item.value:
                raise InputError(f"expected a profile path (string), got {type_name(item)}",
                                 file=item.file, line=item.line, key=EXTENDS,
                                 allowed="a path or a list of paths")
            found.append((self._locate(path, item), item))
        return found

    @staticmethod
    def _locate(path: Path, item: Scalar) -> Path:
        rel = str(item.value)
        if "\0" in rel:
            raise InputError(f"{rel!r}: not a path", file=item.file, line=item.line, key=EXTENDS)
        # absolute, or relative to the extending profile's directory; a bare name that is
        # not found there falls back to the profiles shipped with auditbox
        bases = [Path(os.path.normpath(path.parent / rel))]
        if "/" not in rel:
            bases.append(SHIPPED_PROFILES / rel)
        candidates = []
        for base in bases:
            candidates.append(base)
            if base.suffix not in (".yaml", ".yml"):
                candidates.append(base.with_name(base.name + ".yaml"))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise InputError(f"parent profile {rel!r} not found (looked for "
                         + ", ".join(str(c) for c in candidates) + ")",
                         file=item.file, line=item.line, key=EXTENDS)


def resolve_profile(path: Path) -> tuple[Map, list[Path]]:
    """Load `path` and its parents; return the merged tree and the files read, in order."""
    resolver = _Resolver()
    tree = resolver.resolve(path, ())
    return tree, resolver.sources
