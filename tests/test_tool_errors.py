"""Every tool the build calls fails as one line and exit 1 through the CLI, never a
traceback: bind mounts, tree removal, partition extraction, a missing tool."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from builder.chroot import bind, remove_tree
from builder.cli import cli, main
from builder.progress import BuildLog
from builder.reproducible import extract_partition
from tests.tools import require


@pytest.fixture
def log(tmp_path: Path) -> Iterator[BuildLog]:
    build_log = BuildLog(tmp_path / "logs" / "build.log", quiet=True)
    yield build_log
    build_log.close()


def through_cli(step: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run step as an `auditbox` subcommand through the real main(): (exit code, stderr)."""
    @click.command("failing-step")
    def command() -> None:
        step()

    cli.add_command(command)
    try:
        code = main(["failing-step"])
    finally:
        cli.commands.pop("failing-step")
    return code, capsys.readouterr().err


def one_line(code: int, err: str, log: BuildLog) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and lines[0].endswith(f"(log: {log.path})"), err
    return lines[0]


def test_bind_mount_failure(tmp_path: Path, log: BuildLog,
                            capsys: pytest.CaptureFixture[str]) -> None:
    require(("mount", "umount"))
    missing = tmp_path / "missing"

    def step() -> None:
        with bind(log, missing, tmp_path / "target"):
            raise AssertionError("mounted a directory that does not exist")

    line = one_line(*through_cli(step, capsys), log)
    assert line.startswith(f"error: mount --bind {missing} failed with exit code 32")
    assert f"$ mount --bind {missing}" in log.path.read_text()


def test_remove_tree_failure(tmp_path: Path, log: BuildLog,
                             capsys: pytest.CaptureFixture[str]) -> None:
    require(("mount", "umount"))
    ro = tmp_path / "ro"
    (ro / "tree" / "etc").mkdir(parents=True)
    (ro / "tree" / "etc" / "file").write_text("x")
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        line = one_line(*through_cli(lambda: remove_tree(log, ro / "tree"), capsys), log)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert line.startswith(f"error: cannot delete {ro / 'tree'}: Read-only file system")
    assert (ro / "tree" / "etc" / "file").exists()


def test_partition_extraction_failure(tmp_path: Path, log: BuildLog,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    require(("fsck.erofs",), need_root=False)
    image = tmp_path / "image.raw"
    image.write_bytes(b"\x00" * 8192)             # no erofs superblock at the offset
    part = {"offset": 4096, "raw_size": 4096, "type": "root-x86-64"}
    dest = tmp_path / "tree"
    code, err = through_cli(lambda: extract_partition(log, image, part, dest), capsys)
    line = one_line(code, err, log)
    assert line.startswith("error: fsck.erofs --extract image.raw failed with exit code")
    assert not dest.with_suffix(".erofs").exists()


def test_missing_tool(log: BuildLog, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = through_cli(lambda: log.run(["auditbox-no-such-tool", "x"], what="frobnicate"),
                            capsys)
    line = one_line(code, err, log)
    assert line.startswith("error: frobnicate: cannot run auditbox-no-such-tool: "
                           "No such file or directory")
