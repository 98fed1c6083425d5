"""Per-run places (tests/rundir.py) and the guest -> host relay (tests/machine.py)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from builder.qemu import QemuVM, VMConfig, ovmf_file
from tests.machine import RELAY_HOST, Machine
from tests.rundir import prune


def _run(runs: Path, name: str, mtime: int) -> Path:
    path = runs / name
    path.mkdir(parents=True)
    (path / "marker").write_text(name)
    (path / ".lock").touch()
    os.utime(path / ".lock", (mtime, mtime))
    return path


def test_prune_keeps_the_newest_and_every_live_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old_live = _run(runs, "run-a", 100)
    old_done = _run(runs, "run-b", 200)
    newer = [_run(runs, f"run-{c}", t) for c, t in (("c", 300), ("d", 400))]
    current = _run(runs, "run-e", 500)
    with (old_live / ".lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_SH)           # another process's run, still going
        removed = prune(runs, keep=2, current=current)
    assert removed == [old_done]
    assert sorted(p.name for p in runs.iterdir()) == ["run-a", "run-c", "run-d", "run-e"]
    assert all((p / "marker").exists() for p in (*newer, current, old_live))


def test_host_forwards_become_guestfwd_relays(tmp_path: Path) -> None:
    ovmf_file("OVMF_CODE_4M.fd")    # argv() copies the firmware's varstore
    image = tmp_path / "image.raw"
    image.write_bytes(b"")
    m = Machine(image, name="argv", log_dir=tmp_path, host_forwards={2222: 40001, 2223: 40002})
    vm = QemuVM(m.config)
    try:
        argv = vm.argv()
    finally:
        vm.stop()
        m.stop()
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev == (f"user,id=net0,host={RELAY_HOST},"
                      "guestfwd=tcp:10.0.2.2:2222-cmd:socat - TCP:127.0.0.1:40001,"
                      "guestfwd=tcp:10.0.2.2:2223-cmd:socat - TCP:127.0.0.1:40002")


def test_netdev_options_escape_commas(tmp_path: Path) -> None:
    ovmf_file("OVMF_CODE_4M.fd")
    image = tmp_path / "image.raw"
    image.write_bytes(b"")
    vm = QemuVM(VMConfig(image, tpm=False, hostfwd=["tcp:127.0.0.1:0-:22"],
                         guestfwd=["tcp:10.0.2.100:80-cmd:a,b"]))
    try:
        argv = vm.argv()
    finally:
        vm.stop()
    assert argv[argv.index("-netdev") + 1] == (
        "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22,guestfwd=tcp:10.0.2.100:80-cmd:a,,b")


def test_machines_never_share_socket_directories(tmp_path: Path) -> None:
    image = tmp_path / "image.raw"
    image.write_bytes(b"")
    a, b = (Machine(image, name="same", log_dir=tmp_path) for _ in range(2))
    try:
        assert a.sockets != b.sockets
        assert len(str(a.config.qmp)) < 100      # UNIX socket paths are limited to 108 bytes
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("name", ["x" * 200])
def test_long_machine_names_keep_socket_paths_short(tmp_path: Path, name: str) -> None:
    image = tmp_path / "image.raw"
    image.write_bytes(b"")
    m = Machine(image, name=name, log_dir=tmp_path)
    try:
        assert len(str(m.config.serials[1])) < 100
    finally:
        m.stop()
