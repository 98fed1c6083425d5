"""Shared fixtures: built images (once per session), their trees, a booted test machine.

Tests that need root, mmdebstrap or QEMU skip with a reason where a tool is truly
missing, except in CI (CI=true), where a missing tool is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.images import BuiltImage, build_image
from tests.machine import Machine
from tests.rundir import ENV as RUN_DIR_ENV
from tests.rundir import run_dir
from tests.testinfra_backend import machine_host
from tests.testinfra_backend import tree_host as make_tree_host
from tests.tools import BUILD_TOOLS, VM_TOOLS, require

REPO = Path(__file__).resolve().parent.parent
# ports the guest dials at 10.0.2.2 (tests/machine.py USERNET_HOST); the host side of
# each is a listener on a free port, so that two test runs can share the machine
GATEWAY_PORT = 2222     # profiles/audit-laptop-test.yaml kiosk.gateway_port
OTHER_PORT = 2223       # a port the egress filter must keep closed
# the image on a bigger disk, as on a laptop: room for the state partition (systemd-repart)
DISK_BYTES = 1 << 30
# extra devices the attack tests use: USB controller, a parallel port, two display outputs
TEST_VM_DEVICES = ["-device", "qemu-xhci,id=xhci", "-parallel", "null",
                   "-device", "virtio-gpu-pci,max_outputs=2"]


def pytest_configure(config: pytest.Config) -> None:
    # a run directory given by make test is locked from the start, so that another run's
    # pruning never takes it before the first image is built into it
    if os.environ.get(RUN_DIR_ENV):
        run_dir()


@pytest.fixture(scope="session")
def test_image() -> BuiltImage:
    require(BUILD_TOOLS)
    return build_image("audit-laptop-test.yaml", "test")


@pytest.fixture(scope="session")
def prod_image() -> BuiltImage:
    require(BUILD_TOOLS)
    # production-like (no test channel); the base audit-laptop.yaml names no gateway
    return build_image("audit-laptop-example.yaml", "prod")


@pytest.fixture(scope="session")
def variant_image() -> BuiltImage:
    """The test image rebuilt with one more kernel command line token."""
    require(BUILD_TOOLS)
    return build_image(REPO / "tests/profiles_vm/cmdline-variant.yaml", "variant")


@pytest.fixture(scope="session")
def tree_host(test_image: BuiltImage) -> Any:
    return make_tree_host(str(test_image.tree))


@pytest.fixture(scope="session")
def prod_tree_host(prod_image: BuiltImage) -> Any:
    return make_tree_host(str(prod_image.tree))


class _Listener:
    """A TCP server on a free host loopback port (`port`); the test machine relays the
    guest's 10.0.2.2:guest_port to it."""

    def __init__(self, guest_port: int) -> None:
        self.guest_port = guest_port
        self.accepted = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                conn.sendall(b"auditbox-test-listener\n")
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session")
def gateway_listener() -> Iterator[_Listener]:
    listener = _Listener(GATEWAY_PORT)
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def other_listener() -> Iterator[_Listener]:
    listener = _Listener(OTHER_PORT)
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def gateway_port(gateway_listener: _Listener) -> int:
    """The port the guest dials at 10.0.2.2 to reach gateway_listener."""
    return gateway_listener.guest_port


@pytest.fixture(scope="session")
def other_port(other_listener: _Listener) -> int:
    """The port the guest dials at 10.0.2.2 to reach other_listener."""
    return other_listener.guest_port


def _booted(image: BuiltImage, name: str, extra_args: list[str] | None = None,
            host_forwards: dict[int, int] | None = None) -> Iterator[Machine]:
    """Boot image until its test shell answers and systemd has settled; stop it after."""
    require(VM_TOOLS)
    m = Machine(image.image, name=name, extra_args=extra_args, host_forwards=host_forwards,
                disk_bytes=DISK_BYTES)
    m.start()
    try:
        m.wait_for_shell()
        m.succeed("systemctl is-system-running --wait || true", timeout=600)
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def machine(test_image: BuiltImage, gateway_listener: _Listener,
            other_listener: _Listener) -> Iterator[Machine]:
    """The booted test image, shared by every VM test of the session."""
    forwards = {lst.guest_port: lst.port for lst in (gateway_listener, other_listener)}
    yield from _booted(test_image, "test", TEST_VM_DEVICES, forwards)


@pytest.fixture(scope="session")
def variant_machine(variant_image: BuiltImage) -> Iterator[Machine]:
    """The booted variant image (one more kernel command line token)."""
    yield from _booted(variant_image, "variant")


@pytest.fixture(scope="module")
def firewall_broken_machine() -> Iterator[Machine]:
    """The test image with a ruleset nft refuses (tests/profiles_vm/firewall-broken.yaml)."""
    require(BUILD_TOOLS)
    image = build_image(REPO / "tests/profiles_vm/firewall-broken.yaml", "firewall-broken")
    yield from _booted(image, "firewall-broken")


@pytest.fixture(scope="session")
def vm_host(machine: Machine) -> Any:
    return machine_host(machine)
