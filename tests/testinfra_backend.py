"""testinfra backends: a Machine's test shell, and the built tree (chroot)."""

from __future__ import annotations

from typing import Any

import testinfra.host
from testinfra.backend import base
from testinfra.backend.chroot import ChrootBackend

from tests.machine import Machine


class MachineBackend(base.BaseBackend):
    NAME = "auditbox-machine"

    def __init__(self, machine: Machine, *args: Any, **kwargs: Any) -> None:
        self.machine = machine
        super().__init__(machine.name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        rc, out, err = self.machine.run(cmd)
        return self.result(rc, self.encode(cmd), out, err)


def machine_host(machine: Machine) -> testinfra.host.Host:
    return testinfra.host.Host(MachineBackend(machine))


def tree_host(path: str) -> testinfra.host.Host:
    return testinfra.host.Host(ChrootBackend(path))
