"""Profile loader: good profiles, merge semantics, origins, schema, strict YAML."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath
from typing import get_type_hints

import pytest
from click.testing import CliRunner

from builder.commands.profile import check_profile, profile_group, validate_cmd
from builder.errors import InputError
from builder.profile import load_profile, profile_to_dict, schema_text
from builder.profile import validators as v
from builder.profile.model import FileEntry, Origin, Profile, User
from builder.profile.settings import BY_KEY, SETTINGS, Kind, schema_json
from tests.clirun import run_main

GOOD = Path(__file__).parent / "profiles_good"


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_profile(path)
    return info.value


# --- the table and the model agree ----------------------------------------------------

def _model_default(cls: type, name: str) -> object:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise AssertionError(f"{cls.__name__}.{name} has no default")


def test_settings_defaults_match_model() -> None:
    minimal = load_profile(GOOD / "minimal.yaml")
    for s in SETTINGS:
        if s.required or s.kind is Kind.EXTENDS:
            continue
        obj: object = minimal
        *groups, last = s.key.split(".")
        for g in groups:
            obj = getattr(obj, g)
        assert getattr(obj, last) == s.default, s.key
        assert _model_default(type(obj), last) == s.default, s.key
    for cls, key in ((User, "users"), (FileEntry, "files")):
        for f in BY_KEY[key].fields:
            if not f.required:
                assert _model_default(cls, f.name) == f.default, (key, f.name)


def test_every_model_field_has_a_setting() -> None:
    def walk(cls: type, prefix: str) -> list[str]:
        hints = get_type_hints(cls)
        keys: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in ("source", "origins", "sources"):
                continue
            key = f"{prefix}.{f.name}" if prefix else f.name
            hint = hints[f.name]
            if key not in BY_KEY and isinstance(hint, type) and dataclasses.is_dataclass(hint):
                keys.extend(walk(hint, key))
            else:
                keys.append(key)
        return keys

    model_keys = set(walk(Profile, ""))
    table_keys = {s.key for s in SETTINGS if s.kind is not Kind.EXTENDS}
    assert model_keys == table_keys


# --- good profiles --------------------------------------------------------------------

def test_minimal_profile_gets_defaults() -> None:
    p = load_profile(GOOD / "minimal.yaml")
    expected = Profile(name="minimal", source=GOOD / "minimal.yaml")
    assert profile_to_dict(p) == profile_to_dict(expected)
    assert p.sources == [GOOD / "minimal.yaml"]
    assert p.origins["name"] == Origin(GOOD / "minimal.yaml", 1)


def test_base_profile_fully_populated() -> None:
    p = load_profile(GOOD / "base.yaml")
    assert p.name == "base"
    assert p.kernel.cmdline == ["quiet", "lockdown=confidentiality", "module.sig_enforce=1"]
    assert p.kernel.modules.deny == ["usb-storage", "drivers/firewire/*"]
    assert p.users == [User("auditor", 1000, "/usr/local/bin/kiosk", ["video"], None)]
    assert p.kiosk.gateway_port == 2222
    assert p.kiosk.host_key is not None and p.kiosk.host_key.startswith("ssh-ed25519 ")
    assert p.network.dns == ["192.0.2.53", "2001:db8::53"]
    assert p.rule_vars == {"usb-block": {"allow_hid": True, "vendors": ["046d", "413c"]}}
    assert p.files == [FileEntry(PurePosixPath("/etc/issue"), "Authorised auditors only.\n"),
                       FileEntry(PurePosixPath("/etc/motd"), "", 0o600)]
    assert p.image.source_date_epoch == 1700000000
    assert p.output.formats == ["raw"]


def test_kiosk_screen_and_policy_keys() -> None:
    p = load_profile(GOOD / "kiosk-screen.yaml")
    assert p.kiosk.banner == "Example Lab\nModel audit programme"
    assert p.kiosk.notice == "Authorised auditors only.\nActivity is recorded."
    assert (p.kiosk.idle_timeout, p.kiosk.injection.action) == (600, "alert")
    assert (p.kiosk.injection.burst_keys, p.kiosk.injection.burst_ms) == (20, 150)
    defaults = load_profile(GOOD / "minimal.yaml").kiosk
    assert (defaults.banner, defaults.notice, defaults.idle_timeout) == (
        "auditbox terminal", None, 900)
    assert defaults.injection.action == "lock"


def test_profile_to_dict_is_json_and_drops_origins() -> None:
    data = profile_to_dict(load_profile(GOOD / "child.yaml"))
    text = json.dumps(data)
    assert "origins" not in data and "sources" not in data and "source" not in data
    assert data["files"][0] == {"path": "/etc/issue", "content": "Child banner\n", "mode": 0o640}
    assert json.loads(text) == data


# --- merge semantics ------------------------------------------------------------------

def test_child_merges_onto_base() -> None:
    p = load_profile(GOOD / "child.yaml")
    assert p.sources == [GOOD / "base.yaml", GOOD / "child.yaml"]
    assert p.name == "child"                                   # scalar: child wins
    assert p.description == "Audit terminal base"              # inherited
    # list append, "!quiet" removal, duplicate dropped (parent's position kept)
    assert p.kernel.cmdline == ["lockdown=confidentiality", "module.sig_enforce=1",
                                "console=ttyS0"]
    # mappings merge recursively
    assert p.kiosk.gateway_host == "gw.example.org"
    assert p.kiosk.gateway_port == 22
    assert p.kernel.modules.deny == ["usb-storage", "drivers/firewire/*"]
    # users: same name replaces, new one appended
    assert [(u.name, u.uid) for u in p.users] == [("auditor", 1001), ("operator", 1002)]
    assert p.rules == ["usb-block", "sysrq-off", "serial-console"]
    # rule_vars merge per variable, a variable's list is replaced whole
    assert p.rule_vars == {"usb-block": {"allow_hid": True, "vendors": ["1050"]}}
    # files: "!/etc/motd" removes, same path replaces
    assert p.files == [FileEntry(PurePosixPath("/etc/issue"), "Child banner\n", 0o640)]
    assert p.output.formats == ["qcow2"]
    assert p.image.compression == "lzma"
    assert p.image.source_date_epoch is None                   # null overrides
    assert p.image.verity is True


def test_origins_point_at_the_file_and_line_that_set_the_value() -> None:
    p = load_profile(GOOD / "child.yaml")
    base, child = GOOD / "base.yaml", GOOD / "child.yaml"
    assert p.origins["kiosk.gateway_port"] == Origin(child, 9)
    assert p.origins["kiosk.gateway_host"] == Origin(base, 21)
    assert p.origins["kiosk.host_key"] == Origin(base, 23)
    assert p.origins["kernel.cmdline[0]"] == Origin(base, 11)
    assert p.origins["kernel.cmdline[2]"] == Origin(child, 6)
    assert p.origins["users[0].uid"] == Origin(child, 12)
    assert p.origins["rule_vars.usb-block.allow_hid"] == Origin(base, 29)
    assert p.origins["rule_vars.usb-block.vendors"] == Origin(child, 18)
    assert p.origins["image.compression"] == Origin(child, 27)
    assert p.origins["packages.include"] == Origin(base, 6)


def test_diamond_depth_first_in_list_order() -> None:
    p = load_profile(GOOD / "diamond-top.yaml")
    names = [s.name for s in p.sources]
    assert names == ["diamond-root.yaml", "diamond-left.yaml", "diamond-right.yaml",
                     "diamond-top.yaml"]
    assert p.name == "top"
    assert p.hostname == "right-host"              # later parent wins over earlier
    assert p.origins["hostname"] == Origin(GOOD / "diamond-right.yaml", 5)
    assert p.rules == ["r-root", "r-left", "r-right", "r-top"]
    # right removed root-b from its own inheritance; left still brings it
    assert p.kernel.cmdline == ["root-a", "root-b", "left-a", "right-a"]
    right = load_profile(GOOD / "diamond-right.yaml")
    assert right.kernel.cmdline == ["root-a", "right-a"]


def test_extends_relative_to_extending_file_in_subdir() -> None:
    p = load_profile(GOOD / "sub" / "test-variant.yaml")
    assert p.name == "base-test"
    assert p.test_access.root_shell_tty == "ttyS1"
    assert p.test_access.kiosk_tty == "ttyS0"
    base = load_profile(GOOD / "base.yaml")
    assert profile_to_dict(p) | {"name": "base", "test_access": {}} == \
        profile_to_dict(base) | {"test_access": {}}


def test_removal_without_parent_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nrules:\n  - a\n  - '!b'\n")
    e = error_of(path)
    assert (e.file, e.line, e.key) == (str(path), 4, "rules")


def test_removal_of_absent_user(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "name: b\nusers:\n  - {name: alice, uid: 1000}\n")
    path = write(tmp_path, "c.yaml", "extends: base\nname: c\nusers: ['!bob']\n")
    e = error_of(path)
    assert (e.line, e.key) == (3, "users")
    assert "alice" in str(e)
    ok = write(tmp_path, "d.yaml", "extends: base\nname: d\nusers: ['!alice']\n")
    assert load_profile(ok).users == []


def test_child_type_error_points_at_child(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "name: b\nkernel:\n  cmdline: [quiet]\n")
    path = write(tmp_path, "c.yaml", "extends: base.yaml\nname: c\nkernel:\n  cmdline: 5\n")
    e = error_of(path)
    assert (e.file, e.line, e.key) == (str(path), 4, "kernel.cmdline")


def test_parent_error_points_at_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "base.yaml", "name: b\nhostname: bad_name\n")
    path = write(tmp_path, "c.yaml", "extends: base\nname: c\n")
    e = error_of(path)
    assert (e.file, e.line, e.key) == (str(parent), 2, "hostname")


def test_self_extends_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "name: a\nextends: [a]\n")
    e = error_of(path)
    assert (e.line, e.key) == (2, "extends")
    assert "cycle" in e.message


def test_extends_absolute_path_and_shipped_name(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "profiles" / "audit-laptop.yaml"
    by_path = write(tmp_path, "a.yaml", f"name: a\nextends: {shipped}\n")
    by_name = write(tmp_path, "b.yaml", "name: b\nextends: audit-laptop\n")
    for path in (by_path, by_name):
        profile = load_profile(path)
        assert profile.sources[0] == shipped
        assert profile.users[0].name == "kiosk"


def test_extends_of_a_non_profile_is_refused_in_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "name: a\nextends: /etc/passwd\n")
    e = error_of(path)
    assert e.file == "/etc/passwd" and "mapping" in e.message


def test_duplicate_uid(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "name: a\nusers:\n  - {name: x, uid: 1000}\n"
                 "  - {name: y, uid: 1000}\n")
    e = error_of(path)
    assert (e.line, e.key) == (4, "users[1].uid")


# --- strict YAML ----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line"), [
    ("name: a\n1: x\n", 2),                       # non-string key
    ("name: a\nkernel: {cmdline: [a, a]}\n<<: {x: 1}\n", 3),  # merge key
    ("name: !!str a\n", 1),                       # explicit tag
    ("name: &n a\nhostname: *n\n", 1),            # anchor
    ("name: a\n...\n---\nname: b\n", 4),          # second document
    ("name: a\nrule_vars: " + "[" * 200 + "]" * 200 + "\n", 2),  # nesting
    ("name: a\ndescription: \"\x07\"\n", 2),      # control character
    ("null\n", 1),
    ("just a string\n", 1),
])
def test_strict_yaml(tmp_path: Path, text: str, line: int) -> None:
    e = error_of(write(tmp_path, "p.yaml", text))
    assert e.line == line and e.key


def test_too_large_and_missing(tmp_path: Path) -> None:
    big = write(tmp_path, "big.yaml", "name: a\n" + "#" * (1024 * 1024) + "\n")
    assert "larger" in error_of(big).message
    missing = error_of(tmp_path / "nope.yaml")
    assert missing.line == 1 and missing.key == "(file)"
    assert error_of(tmp_path).key == "(file)"


def test_bool_spellings(tmp_path: Path) -> None:
    ok = write(tmp_path, "a.yaml", "name: a\nnetwork: {dhcp: false, ipv6: True}\n")
    assert load_profile(ok).network.ipv6 is True
    bad = write(tmp_path, "b.yaml", "name: a\nnetwork:\n  dhcp: yes\n")
    assert error_of(bad).line == 3


def test_mode_forms(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "name: a\nfiles:\n"
                 "  - {path: /a, content: x, mode: 0755}\n"
                 "  - {path: /b, content: x, mode: '0o600'}\n"
                 "  - {path: /c, content: x, mode: 0}\n")
    assert [f.mode for f in load_profile(path).files] == [0o755, 0o600, 0]
    bad = write(tmp_path, "b.yaml", "name: a\nfiles:\n  - {path: /a, content: x, mode: '0999'}\n")
    assert error_of(bad).key == "files[0].mode"


# --- validators -----------------------------------------------------------------------

@pytest.mark.parametrize(("check", "good", "bad"), [
    (v.CMDLINE_TOKEN, ["quiet", "video=HDMI-A-1:d", "a.b=1,2"], ["a b", "a'b", "a;b", "$x", "`x`",
                                                                 "a\nb", "x" * 300]),
    (v.PACKAGE, ["tmux", "libc6", "g++", "python3.11"], ["A", "a", "vim tmux", "-x", "a;b"]),
    (v.MODULE, ["usb-storage", "drivers/usb/storage/*", "fs/*"],
     ["/drivers/x", "../x", "drivers/../x", "a b", "drivers//x"]),
    (v.IMAGE_PATH, ["/etc/motd", "/usr/lib/x@y+z"],
     ["etc", "/etc/", "/a//b", "/a/../b", "/a/./b", "/proc/x", "/sys", "/dev/sda", "/a b", "/"]),
    (v.HOSTNAME, ["a", "gw.example.org", "a-b"], ["-a", "a_b", "a..b", "1.2.3.999", "x" * 64]),
    (v.HOST_OR_IP, ["gw.example.org", "192.0.2.1", "2001:db8::1"], ["gw example", "a_b"]),
    (v.PROFILE_NAME, ["a", "audit-laptop"], ["-a", "A", "a_b", "a" * 64]),
    (v.MIRROR, ["http://deb.example/debian", "https://x:8080/p", "file:///srv/d"],
     ["ftp://x", "http://x y", "http://x/\"", "x"]),
    (v.TTY, ["tty1", "tty12", "ttyS0", "hvc0"], ["tty", "tty123", "ttyS10", "ttyUSB0", "console"]),
    (v.USER_NAME, ["auditor", "_svc", "a-b"], ["Root", "1a", "a" * 33]),
])
def test_validators(check: v.Check, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert check(value) is None, value
    for value in bad:
        assert check(value) is not None, value


def test_host_key_check() -> None:
    key = (GOOD / "base.yaml").read_text().split("host_key: ", 1)[1].split("\n")[0]
    assert v.HOST_KEY(key) is None
    assert v.HOST_KEY(key.replace("ssh-ed25519", "ssh-rsa", 1)) is not None
    assert v.HOST_KEY("ssh-dss AAAA") is not None
    assert v.HOST_KEY("ssh-ed25519") is not None


# --- schema and CLI -------------------------------------------------------------------

def test_schema_lists_every_key_and_merge_rules() -> None:
    text = schema_text()
    for s in SETTINGS:
        assert f"  {s.key}\n" in text
        for f in s.fields:
            assert f"      {f.name}\n" in text
    assert "Merge rules" in text and "!item" in text
    data = schema_json()
    assert [s["key"] for s in data["settings"]] == [s.key for s in SETTINGS]
    json.dumps(data)


def test_cli_validate_and_schema() -> None:
    runner = CliRunner()
    result = runner.invoke(validate_cmd, [str(GOOD / "minimal.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: minimal (1 files, ")
    # child.yaml is a good profile for the loader, but names rules the catalogue lacks
    failed = run_main("validate", str(GOOD / "child.yaml"))
    assert failed.exit_code == 2 and "unknown rule" in failed.error_line()
    result = runner.invoke(profile_group, ["schema"])
    assert result.exit_code == 0 and result.output == schema_text()
    result = runner.invoke(profile_group, ["schema", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == schema_json()


def test_check_profile_helper() -> None:
    code, line, profile = check_profile(GOOD / "diamond-top.yaml")
    assert (code, line) == (0, "ok: top (4 files)")
    assert profile is not None
