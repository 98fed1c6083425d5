"""Every malformed profile gives exactly the expected one-line error and exit 2."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.commands.profile import check_profile, validate_cmd
from builder.errors import InputError
from builder.profile import load_profile
from builder.profile.merge import SHIPPED_PROFILES
from builder.profile.settings import SETTINGS
from tests.clirun import run_main

HERE = Path(__file__).parent
BAD = HERE / "profiles_bad"
GOOD = HERE / "profiles_good"
EXPECTED: dict[str, str] = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())
CASES = sorted(EXPECTED)
GOOD_PROFILES = sorted(GOOD.rglob("*.yaml"))
LINE = re.compile(r"^error: [^\s:]+\.yaml:\d+: \S+: \S.*$")


def _relative(text: str) -> str:
    return text.replace(str(BAD) + "/", "").replace(str(SHIPPED_PROFILES), "PROFILES")


def test_corpus_is_complete() -> None:
    files = {p.name for p in BAD.glob("*.yaml")
             if not p.name.startswith("_") and p.name != "EXPECTED.yaml"}
    assert files == set(CASES)
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES)
def test_corpus_error_line(case: str) -> None:
    code, line, profile = check_profile(BAD / case)
    assert profile is None
    assert code == 2
    text = _relative(line)
    assert text == EXPECTED[case]
    assert "\n" not in text and "Traceback" not in text
    assert LINE.match(text), text


@pytest.mark.parametrize("case", CASES)
def test_corpus_error_fields(case: str) -> None:
    with pytest.raises(InputError) as info:
        load_profile(BAD / case)
    e = info.value
    assert e.file and e.line is not None and e.line >= 1 and e.key


@pytest.mark.parametrize("case", CASES)
def test_corpus_cli_exit_2(case: str) -> None:
    result = run_main("validate", str(BAD / case))
    assert result.exit_code == 2
    assert _relative(result.error_line()) == EXPECTED[case]


# `validate` also resolves rules against the catalogue, so only real images pass it: the
# shipped profiles and the test variants (the loader fixtures above use made-up rule ids).
# audit-laptop.yaml is a base that names no gateway: tests/test_profile_required.py.
VALID_IMAGES = sorted([*(p for p in SHIPPED_PROFILES.glob("*.yaml")
                         if p.name != "audit-laptop.yaml"),
                       *(BAD.parent / "profiles_vm").glob("*.yaml"), GOOD / "minimal.yaml"])


@pytest.mark.parametrize("path", VALID_IMAGES, ids=lambda p: p.name)
def test_valid_profiles_cli_exit_0(path: Path) -> None:
    result = CliRunner().invoke(validate_cmd, [str(path)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"ok: [a-z0-9-]+ \(\d+ files, \d+ rules, \d+ packages\)\n",
                        result.output)


# --- fuzzing: only InputError may come out ---------------------------------------------

def _load_text(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_bytes(data)
        try:
            load_profile(path)
        except InputError as e:
            text = "error: " + str(e)
            assert "\n" not in text
            assert e.file is not None and e.line is not None and e.key


YAMLISH = st.lists(st.sampled_from([*"ab01 :-[]{}!&*#'\"\n\t.,|>%@`?~",
                                   "name: x\n", "kernel:\n  ", "extends: ", "  - ", "rules:",
                                   "users:\n  - name: ", "\u00e9", "\x00", "\ud800"]),
                   max_size=80).map("".join)


@settings(max_examples=300, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_fuzz_yamlish_text(text: str) -> None:
    _load_text(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, database=None, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(data: bytes) -> None:
    _load_text(data)


_KEYS = [s.key.split(".")[-1] for s in SETTINGS] + [s.key.split(".")[0] for s in SETTINGS] + [
    "name", "uid", "path", "content", "mode", "!x", "zz"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(),
                     st.text(max_size=12), st.sampled_from(["!quiet", "tty1", "raw", "0644",
                                                            "/etc/x", "ssh-ed25519 AAAA"]))
_VALUES: Any = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6))
def test_fuzz_mappings(doc: dict[str, Any]) -> None:
    doc.pop("extends", None)
    _load_text(yaml.safe_dump(doc).encode())


@settings(max_examples=200, database=None, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["", "x", ":", "\n", "- ", "!", "\t", "  "]))
def test_fuzz_mutated_good_profile(pos: int, insert: str) -> None:
    text = (GOOD / "base.yaml").read_text()
    pos %= len(text)
    _load_text((text[:pos] + insert + text[pos + 1:]).encode())


def _nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "fuzz"}
    for key, value in pairs:
        node = doc
        *groups, last = key.split(".")
        for g in groups:
            node = node.setdefault(g, {})
        node[last] = value
    return doc


_KNOWN = sorted(s.key for s in SETTINGS if s.key != "extends")


@settings(max_examples=300, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KNOWN), _VALUES), max_size=5))
def test_fuzz_known_keys(pairs: list[tuple[str, Any]]) -> None:
    _load_text(yaml.safe_dump(_nest(pairs)).encode())
