"""Output writers that need no image build: qcow2 conversion, checksums, staged OUT."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder import outputs
from builder.errors import InputError
from builder.progress import BuildLog
from tests.tools import require


def test_qcow2_is_converted_by_qemu_img(tmp_path: Path) -> None:
    require(("qemu-img",), need_root=False)
    raw = tmp_path / "image.raw"
    raw.write_bytes(b"\0" * (1 << 20) + b"auditbox" + b"\0" * ((1 << 20) - 8))
    log = BuildLog(tmp_path / "build.log", quiet=True)
    outputs.write_qcow2(log, tmp_path)
    log.close()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(tmp_path / "image.qcow2")], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 << 20
    subprocess.run(["qemu-img", "compare", str(raw), str(tmp_path / "image.qcow2")], check=True)


def test_sha256sums_cover_what_exists(tmp_path: Path) -> None:
    (tmp_path / "image.raw").write_bytes(b"disk")
    (tmp_path / "manifest.json").write_text("{}")
    sums = outputs.write_sha256sums(tmp_path)
    assert set(sums) == {"image.raw", "manifest.json"}
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_staged_output_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with outputs.staged_output(out) as stage:
        (stage / "manifest.json").write_text("{}")
        (stage / "image.raw").write_text("first")
    assert (out / "image.raw").read_text() == "first"
    with pytest.raises(RuntimeError), outputs.staged_output(out) as stage:
        (stage / "image.raw").write_text("half")
        raise RuntimeError("build step failed")
    assert (out / "image.raw").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_output_never_deletes_a_users_directory(tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep")
    with pytest.raises(InputError), outputs.staged_output(out):
        pass
    assert (out / "todo.txt").read_text() == "keep"
