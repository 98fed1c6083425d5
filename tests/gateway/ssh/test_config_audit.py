"""A changed gateway.yaml is in the audit log: gateway.start carries the file's sha256, and a
start whose file differs from the one this replica last started with writes config.changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.gateway.gwharness import Sshd, fresh_world


def test_config_change_between_starts_is_audited(sshd: Sshd, tmp_path: Path) -> None:
    world = fresh_world(tmp_path, sshd)
    try:
        path = world.dir / "gateway.yaml"
        first = hashlib.sha256(path.read_bytes()).hexdigest()
        start = world.wait_event("gateway.start")
        assert start.data["config_sha256"] == first
        assert start.data["config"] == str(path.absolute())

        world.stop()
        world.start()                            # the same file: no change recorded
        assert len(world.audit_events("gateway.start")) == 2
        assert world.audit_events("config.changed") == []

        world.stop()
        path.write_text(path.read_text() + "budget:\n  rate: 4KiB\n")
        second = hashlib.sha256(path.read_bytes()).hexdigest()
        world.start()
        changed = world.wait_event("config.changed")
        assert changed.actor == "system"
        assert changed.data["previous_sha256"] == first
        assert changed.data["config_sha256"] == second
        assert changed.data["replica"] == world.replica
        assert "configuration changed" in world.log_text()

        world.stop()
        world.start()                            # unchanged since: nothing new
        assert len(world.audit_events("config.changed")) == 1
    finally:
        world.stop()
