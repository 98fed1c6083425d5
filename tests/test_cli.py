"""The CLI's contract for bad input: one line, exit 2, no traceback, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BAD = REPO / "tests" / "profiles_bad"


def auditbox(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    # this interpreter's bin first: the auditbox of this checkout, not another install's
    return subprocess.run(["auditbox", *args], capture_output=True, text=True,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:"
                               f"/bin:{Path.home()}/.pyenv/shims", "AUDITBOX_CACHE": str(cache),
                               "HOME": str(Path.home())}, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(p.name for p in BAD.glob("[!_]*.yaml")))
def test_build_of_a_bad_profile_leaves_nothing_behind(case: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    line = one_line_error(auditbox("build", str(BAD / case), "-o", str(out), cache=cache))
    assert case in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["cache"])
    if cache.exists():
        leftovers = [p for p in cache.rglob("*") if p.is_file()]
        assert leftovers == []


@pytest.mark.parametrize("args", [
    ["build"],
    ["build", "profiles/audit-laptop-example.yaml", "--format", "vmdk"],
    ["build", "profiles/audit-laptop-example.yaml", "--mirror", "http://x y"],
    ["build", "profiles/audit-laptop-example.yaml", "--signing-key", "/nonexistent/key.pem"],
    ["run", "/nonexistent/image.raw", "--memory", "12"],
    ["no-such-command"],
])
def test_bad_command_lines(args: list[str], tmp_path: Path) -> None:
    proc = auditbox(*args, cache=tmp_path / "cache")
    one_line_error(proc)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tar"))


def test_missing_image_for_run(tmp_path: Path) -> None:
    line = one_line_error(auditbox("run", str(tmp_path / "nope.raw"), cache=tmp_path / "c"))
    assert "nope.raw" in line


def test_build_refuses_to_replace_a_directory_it_did_not_make(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    line = one_line_error(auditbox("build", str(REPO / "profiles" / "audit-laptop-example.yaml"),
                                   "-o", str(out), cache=tmp_path / "cache"))
    assert "refusing" in line
    assert (out / "thesis.txt").read_text() == "precious"


def test_inspect_of_a_non_output(tmp_path: Path) -> None:
    one_line_error(auditbox("inspect", str(tmp_path), cache=tmp_path / "c"))


def test_validate_ok() -> None:
    proc = subprocess.run(["auditbox", "validate", str(REPO / "profiles/audit-laptop-test.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: audit-laptop-test")
