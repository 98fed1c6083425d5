"""Every VM check of the rule catalogue against the booted test image (fixture `vm_host`,
a testinfra Host on the running VM, from the lead's tests/vm/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builder.rules import Check, checks
from builder.rules.results import run_and_record

TEST_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "audit-laptop-test.yaml"

pytestmark = pytest.mark.vm


def _params() -> list[Any]:
    try:
        from builder.profile import load_profile

        selected = [c for c in checks(load_profile(TEST_PROFILE)) if c.where == "vm"]
    except Exception as exc:  # the profile (or its loader) is not there yet
        reason = f"{TEST_PROFILE.name} unavailable: {type(exc).__name__}: {exc}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="unavailable")]
    return [pytest.param(c, id=c.name) for c in selected]


@pytest.mark.parametrize("check", _params())
def test_vm_check(check: Check, request: pytest.FixtureRequest) -> None:
    try:
        host = request.getfixturevalue("vm_host")
    except pytest.FixtureLookupError:
        pytest.skip("fixture vm_host not provided")
    run_and_record(check, host)
