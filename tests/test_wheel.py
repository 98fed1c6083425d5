"""The wheel carries its data: from an unpacked wheel, away from the checkout, the CLI
finds the rule catalogue, the profiles and the overlays."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_install_finds_its_data(tmp_path: Path) -> None:
    # a copy of the source (pip builds in the tree it is given; two runs must not share one)
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "out", "*.egg-info", "__pycache__", ".*_cache"))
    # as `pip install .` builds it (isolated build environment from pyproject.toml)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("auditbox-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    rules = sorted(p.name for p in (REPO / "profiles" / "rules").glob("*.yaml"))
    assert sorted(n.rsplit("/", 1)[1] for n in names
                  if n.startswith("builder/data/profiles/rules/")) == rules
    assert "builder/data/overlays/rules/nftables.conf.j2" in names
    assert {"gateway/store/schema.sql", "gateway/units/auditbox-gateway.service"} <= set(names)
    web = REPO / "gateway" / "web"          # the console's templates and static files
    assert {str(f.relative_to(REPO)) for d in ("templates", "static")
            for f in (web / d).rglob("*") if f.is_file()} <= set(names)
    # run from elsewhere, the unpacked wheel first on the path (its dependencies: ours)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import builder; "
            "assert builder.__file__.startswith(sys.argv[1]), builder.__file__; "
            "from builder.cli import main; sys.exit(main(sys.argv[2:]))")
    run = subprocess.run([sys.executable, "-c", code, str(site), "rules", "list"],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1 + len(rules)
    show = subprocess.run([sys.executable, "-c", code, str(site), "rules", "show",
                           "nft-default-drop"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert show.returncode == 0 and "policy drop" in show.stdout, show.stderr
