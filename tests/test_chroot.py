"""Deleting a build tree never reaches through a mount into the host."""

from __future__ import annotations

import subprocess
from pathlib import Path

from builder.chroot import mounts_below, remove_tree
from builder.progress import BuildLog
from tests.tools import require


def test_remove_tree_unmounts_before_deleting(tmp_path: Path) -> None:
    require(("mount", "umount"))
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host), str(tree / "dev")], check=True)
    assert mounts_below(tree) == [tree / "dev"]
    remove_tree(BuildLog(tmp_path / "build.log"), tree)
    assert not tree.exists()
    assert (host / "precious").read_text() == "keep"
