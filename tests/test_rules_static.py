"""Every static check of the rule catalogue against the built root trees.

Fixtures from tests/conftest.py: `tree_host` (testinfra Host of the TEST image's
extracted root tree) and `prod_tree_host` (the production image's). Results go to the check
results file (tests/rundir.py: the run's check-results.json) for `auditbox report`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from builder.rules import Check, checks
from builder.rules.check import dpkg_installed, tree_of
from builder.rules.results import run_and_record
from tests.rundir import check_results

ROOT = Path(__file__).resolve().parents[1]
TEST_PROFILE = ROOT / "profiles" / "audit-laptop-test.yaml"
PROD_PROFILE = ROOT / "profiles" / "audit-laptop-example.yaml"   # what prod_image builds
SSH_SERVERS = ("openssh-server", "openssh-sftp-server", "dropbear", "dropbear-bin", "tinysshd")

pytestmark = pytest.mark.build


def _profile(path: Path) -> Any:
    from builder.profile import load_profile

    return load_profile(path)


def _params(path: Path, where: str) -> list[Any]:
    # a profile that fails to load fails collection: never a silent skip
    selected = [c for c in checks(_profile(path)) if c.where == where]
    assert selected, f"{path.name} yields no {where} checks"
    return [pytest.param(c, id=c.name) for c in selected]


@pytest.mark.parametrize("check", _params(TEST_PROFILE, "static"))
def test_static_test_image(check: Check, tree_host: Any) -> None:
    run_and_record(check, tree_host, check_results())


@pytest.mark.parametrize("check", _params(PROD_PROFILE, "static"))
def test_static_production_image(check: Check, prod_tree_host: Any) -> None:
    prod = Check(check.rule_id, "prod:" + check.name, check.where, check.run, check.description)
    run_and_record(prod, prod_tree_host, check_results())


def _channel_files(host: Any, ttys: list[str]) -> list[str]:
    """Files in the tree that make up a test access channel."""
    tree = tree_of(host)
    hits = []
    for base in ("/etc/systemd/system", "/usr/lib/systemd/system", "/etc/systemd/system.conf.d"):
        for p in tree.walk(base):
            name = PurePosixPath(p).name
            parent = PurePosixPath(p).parent.name
            enabled_on_tty = parent.endswith(".wants") and any(
                name.endswith(f"@{t}.service") for t in ttys)
            if "auditbox-test" in p or enabled_on_tty:
                hits.append(p)
    return hits


def test_production_has_no_test_channel(prod_tree_host: Any, tree_host: Any) -> None:
    prod, test_tree = prod_tree_host, tree_host
    access = _profile(TEST_PROFILE).test_access
    ttys = [t for t in (access.root_shell_tty, access.kiosk_tty) if t]
    assert ttys, "the test profile declares no test access channel"
    # the detector finds the channel where it is, so its silence on production means something
    assert _channel_files(test_tree, ttys), "test tree: no test channel found (detector broken?)"
    leaked = _channel_files(prod, ttys)
    assert not leaked, f"production tree contains test channel files: {leaked}"
    assert "lynis" not in dpkg_installed(tree_of(prod)), "production tree has the test-only lynis"


def test_production_has_no_ssh_server(prod_tree_host: Any) -> None:
    tree = tree_of(prod_tree_host)
    installed = dpkg_installed(tree)
    assert installed, "production tree has no dpkg status"
    assert not set(SSH_SERVERS) & installed
    for path in ("/usr/sbin/sshd", "/usr/sbin/dropbear", "/usr/lib/systemd/system/ssh.service",
                 "/usr/lib/systemd/system/ssh.socket", "/etc/ssh/sshd_config"):
        assert not tree.exists(path), f"{path} present in the production tree"
