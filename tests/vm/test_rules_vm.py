"""Every VM check of the rule catalogue against the booted test image (fixture `vm_host`,
a testinfra Host on the running VM, from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builder.profile import load_profile
from builder.rules import Check, checks
from builder.rules.results import run_and_record
from tests.rundir import check_results

TEST_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "audit-laptop-test.yaml"

pytestmark = pytest.mark.vm


def _params() -> list[Any]:
    # a profile that fails to load fails collection: never a silent skip
    selected = [c for c in checks(load_profile(TEST_PROFILE)) if c.where == "vm"]
    assert selected, "the test profile yields no VM checks"
    return [pytest.param(c, id=c.name) for c in selected]


@pytest.mark.parametrize("check", _params())
def test_vm_check(check: Check, request: pytest.FixtureRequest) -> None:
    run_and_record(check, request.getfixturevalue("vm_host"), check_results())
