"""`requires`: the shipped production profile is a base that names no gateway and refuses to
build on its own; the example and test profiles, which set the keys, build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.errors import InputError
from builder.planner import make_plan
from builder.profile import load_profile
from tests.clirun import run_main

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
BASE = PROFILES / "audit-laptop.yaml"
KEY = (PROFILES.parent / "tests/data/gateway-host-key.pub").read_text().strip()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_profile_names_no_gateway_and_refuses_to_plan() -> None:
    base = load_profile(BASE)                   # a valid base: it loads
    assert base.kiosk.gateway_host is None
    assert {"kiosk.gateway_host", "kiosk.gateway_port", "kiosk.host_key"} <= set(base.requires)
    with pytest.raises(InputError) as info:
        make_plan(base)
    e = info.value
    assert e.file == str(BASE) and e.key == "kiosk.gateway_host"
    assert BASE.read_text().splitlines()[e.line - 1].strip() == "- kiosk.gateway_host"
    assert "kiosk.gateway_host, kiosk.gateway_port, kiosk.host_key" in e.message
    assert "\n" not in str(e)


def test_cli_refuses_the_base_with_one_line() -> None:
    result = run_main("validate", str(BASE))
    assert result.exit_code == 2
    line = result.error_line()
    assert line.startswith(f"error: {BASE}:")
    assert "sets kiosk.gateway_host, kiosk.gateway_port, kiosk.host_key" in line


def test_build_of_the_base_stops_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run(["auditbox", "build", str(BASE), "-o", str(tmp_path / "out"),
                           "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "kiosk.gateway_host" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").rglob("*.tar"))


def test_a_child_must_set_every_required_key(tmp_path: Path) -> None:
    half = write(tmp_path, "half.yaml", f"extends: {BASE}\nname: half\n"
                                        "kiosk:\n  gateway_host: 192.0.2.7\n")
    with pytest.raises(InputError) as info:
        make_plan(load_profile(half))
    assert info.value.key == "kiosk.gateway_port"
    assert info.value.message.endswith("sets kiosk.gateway_port, kiosk.host_key")
    nulled = write(tmp_path, "nulled.yaml", f"extends: {BASE}\nname: nulled\n"
                                            "kiosk:\n  gateway_host: null\n  gateway_port: 22\n")
    with pytest.raises(InputError, match=r"sets kiosk\.gateway_host, kiosk\.host_key$"):
        make_plan(load_profile(nulled))
    full = write(tmp_path, "full.yaml", f"extends: {BASE}\nname: full\nkiosk:\n"
                                        f"  gateway_host: 192.0.2.7\n  gateway_port: 22\n"
                                        f"  host_key: {KEY}\n")
    plan = make_plan(load_profile(full))
    egress = next(f for f in plan.files if f.path.name == "50-egress-gateway.nft")
    assert b"ip daddr 192.0.2.7 tcp dport 22 accept" in egress.content


def test_example_and_test_profiles_build_and_differ_in_gateway() -> None:
    example = load_profile(PROFILES / "audit-laptop-example.yaml")
    test = load_profile(PROFILES / "audit-laptop-test.yaml")
    assert (test.kiosk.gateway_host, test.kiosk.gateway_port) == ("10.0.2.2", 2222)
    assert test.kiosk.host_key == KEY and example.kiosk.host_key not in (None, KEY)
    assert example.kiosk.gateway_host == "192.0.2.10"           # RFC 5737 documentation net
    assert "example" in example.name and "EXAMPLE" in example.description
    assert example.kiosk.banner.startswith("EXAMPLE IMAGE")
    assert example.test_access.root_shell_tty is None and example.test_access.kiosk_tty is None
    plan = make_plan(example)
    issue = next(f for f in plan.files if str(f.path) == "/etc/issue").content.decode()
    assert issue.startswith("EXAMPLE IMAGE")
    make_plan(test)


def test_requires_names_only_real_keys(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "name: bad\nrequires: [kiosk.gatway_host]\n")
    with pytest.raises(InputError) as info:
        load_profile(bad)
    assert (info.value.line, info.value.key) == (2, "requires")
    for key in ("name", "requires", "extends", "kiosk"):
        with pytest.raises(InputError):
            load_profile(write(tmp_path, "k.yaml", f"name: k\nrequires: [{key}]\n"))
