"""The built images: outputs, manifest, checksums, and what the production tree must not hold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from attestation.reference import load_public_key, load_reference
from tests.images import BuiltImage

pytestmark = pytest.mark.build

OUTPUTS = ("image.raw", "manifest.json", "reference.json", "reference.json.sig",
           "build-key.pub", "SHA256SUMS", "build.log")
MANIFEST_KEYS = ("auditbox_version", "profile", "suite", "packages", "kernel_version",
                 "kernel_cmdline", "sha256", "tools", "build", "partitions", "image_size")


def test_outputs_exist(test_image: BuiltImage) -> None:
    for name in OUTPUTS:
        assert (test_image.out / name).is_file(), name


def test_sha256sums_verify(test_image: BuiltImage) -> None:
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=test_image.out,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "image.raw: OK" in proc.stdout


def test_manifest_is_complete(test_image: BuiltImage) -> None:
    m = test_image.manifest
    for key in MANIFEST_KEYS:
        assert key in m, key
    assert m["suite"] == "trixie"
    assert m["packages"]["auditbox-terminal"] == m["auditbox_version"]
    assert m["packages"]["linux-image-amd64"]
    assert m["kernel_cmdline"].startswith("roothash=" + m["roothash"])
    assert m["profile"]["name"] == "audit-laptop-test"
    assert {p["type"] for p in m["partitions"]} == {"esp", "root-x86-64", "root-x86-64-verity"}


def test_reference_is_signed_and_matches_manifest(test_image: BuiltImage) -> None:
    key = load_public_key(test_image.out / "build-key.pub")
    ref: dict[str, Any] = load_reference(test_image.out / "reference.json", [key])
    assert ref["image_id"] == test_image.manifest["image_id"]
    assert ref["cmdline"] == test_image.manifest["kernel_cmdline"]
    assert ref["roothash"] == test_image.manifest["roothash"]
    assert "11" in ref["pcrs"]


def test_gpt_uses_discoverable_partition_types(test_image: BuiltImage) -> None:
    out = subprocess.run(["sfdisk", "--json", str(test_image.image)], capture_output=True,
                         text=True, check=True).stdout
    types = {p["type"] for p in json.loads(out)["partitiontable"]["partitions"]}
    assert types == {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B",   # ESP
                     "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",   # root x86-64
                     "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"}   # root verity x86-64


def test_uki_is_on_the_esp(test_image: BuiltImage, tmp_path: Path) -> None:
    esp = next(p for p in test_image.manifest["partitions"] if p["type"] == "esp")
    img = tmp_path / "esp.img"
    with test_image.image.open("rb") as src:
        src.seek(esp["offset"])
        img.write_bytes(src.read(esp["raw_size"]))
    listing = subprocess.run(["mdir", "-i", str(img), "-b", "::/EFI/BOOT"], capture_output=True,
                             text=True, check=True).stdout
    assert "BOOTX64.EFI" in listing


def test_test_tree_has_the_test_channel(tree_host: Any) -> None:
    unit = tree_host.file("/etc/systemd/system/auditbox-test-shell@ttyS1.service")
    assert unit.exists and "ttyS1" in unit.content_string
    assert tree_host.file(
        "/etc/systemd/system/multi-user.target.wants/auditbox-test-shell@ttyS1.service").exists


TEST_MARKER = "grep -rl 'TEST ONLY' /etc /usr/lib/systemd"   # overlays/test/* carry it
KIOSK_UNIT = "/etc/systemd/system/auditbox-kiosk.service"     # the test image moves it


def test_production_tree_has_no_test_channel(prod_tree_host: Any, prod_image: BuiltImage,
                                             tree_host: Any, test_image: BuiltImage) -> None:
    # positive control: the same probes find the channel in the test tree
    found = tree_host.run(TEST_MARKER)
    assert found.rc == 0 and found.stdout.strip(), found.stdout + found.stderr
    assert "TTYPath=/dev/ttyS0" in tree_host.file(KIOSK_UNIT).content_string
    assert any(test_image.manifest["profile"]["test_access"].values())
    # grep exits 1 for "no match"; anything else (2: an error, 125-127: no chroot) is no answer
    clean = prod_tree_host.run(TEST_MARKER)
    assert clean.rc == 1 and clean.stdout == "", (clean.rc, clean.stdout, clean.stderr)
    kiosk = prod_tree_host.file(KIOSK_UNIT).content_string
    assert "TTYPath=/dev/tty1" in kiosk and "ttyS" not in kiosk
    assert not any(prod_image.manifest["profile"].get("test_access", {}).values())
    assert tree_host.package("python3").is_installed      # the package probe answers
    assert not prod_tree_host.package("openssh-server").is_installed


def test_tree_packages_match_manifest(tree_host: Any, test_image: BuiltImage) -> None:
    for name, version in test_image.manifest["packages"].items():
        pkg = tree_host.package(name)
        assert pkg.is_installed and pkg.version == version, name


def test_terminal_package_commands(tree_host: Any) -> None:
    for command in ("/usr/bin/auditbox-kiosk", "/usr/bin/auditbox-attest",
                    "/usr/bin/auditbox-attest-agent"):
        f = tree_host.file(command)
        assert f.exists and f.mode == 0o755
    assert tree_host.run("python3 /usr/bin/auditbox-attest --help").rc == 0


KIOSK_ON_DEBIAN = """
import sys
sys.path.insert(0, "/usr/lib/auditbox/python")
import paramiko, cryptography
import kiosk.app, kiosk.main, kiosk.workers, attestation.agent_service
from kiosk.screens import Field, LoginView, Status, login_frame
frame = login_frame(LoginView("b", "n", Status(), [Field("User name")]), 80, 24)
print(sys.version_info[:2], paramiko.__version__, cryptography.__version__, len(frame.lines))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("builder", "gateway")))
"""


def test_kiosk_runs_on_the_images_own_python(tree_host: Any) -> None:
    """kiosk/ and the agent on Debian 13's python3, python3-paramiko, python3-cryptography
    (the image's, not this checkout's), importing nothing of builder/ or gateway/."""
    out = tree_host.check_output("python3 -c %s", KIOSK_ON_DEBIAN)
    versions, imported = out.splitlines()
    assert versions.startswith("(3, 13)") and versions.endswith(" 24"), versions
    assert imported == "[]"


def test_production_build_is_reproducible(prod_image: BuiltImage, tmp_path: Path) -> None:
    """Two builds of the same inputs (same SOURCE_DATE_EPOCH) give a byte-identical image."""
    import os

    env = dict(os.environ, SOURCE_DATE_EPOCH="1767225600")   # 2026-01-01
    proc = subprocess.run(["auditbox", "build", "--check-reproducible", "-q",
                           str(Path(__file__).parent.parent / "profiles/audit-laptop-example.yaml"),
                           "-o", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("reproducible: two builds gave identical image.raw")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source_date_epoch"] == 1767225600


def test_sbom_lists_every_package(test_image: BuiltImage) -> None:
    sbom = json.loads((test_image.out / "sbom.spdx.json").read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3" and sbom["dataLicense"] == "CC0-1.0"
    listed = {p["name"]: p["versionInfo"] for p in sbom["packages"]}
    assert listed.pop("auditbox") == test_image.manifest["auditbox_version"]
    assert listed == test_image.manifest["packages"]
    described = {r["relatedSpdxElement"] for r in sbom["relationships"]}
    assert described == {p["SPDXID"] for p in sbom["packages"]}


def test_systemd_dissect_accepts_the_verity_pair(test_image: BuiltImage) -> None:
    """trixie's systemd-dissect (from the tools tree) opens the image with its root hash."""
    from tests.dissect import dissect

    info = dissect(test_image.image, test_image.manifest["roothash"])
    designators = {m["designator"]: m for m in info["mounts"]}
    assert designators["root"]["fstype"] == "erofs"
    assert designators["root"]["verity"] in ("yes", "signed")
    assert "root-verity" in designators and "esp" in designators
    assert info["architecture"] == "x86-64"


def test_manifest_names_the_tools_used(test_image: BuiltImage) -> None:
    tools = test_image.manifest["tools"]
    for name in ("mmdebstrap", "systemd-repart", "ukify", "mkfs.erofs", "dracut", "qemu-img"):
        assert tools.get(name), name
    assert "257" in tools["systemd-repart"]


def test_inspect_summarises_the_build(test_image: BuiltImage) -> None:
    proc = subprocess.run(["auditbox", "inspect", "--json", str(test_image.out)],
                          capture_output=True, text=True, check=True)
    summary = json.loads(proc.stdout)
    assert summary["image_id"] == test_image.manifest["image_id"]
    assert summary["roothash"] == test_image.manifest["roothash"]
    assert summary["predicted_pcrs"]["11"]
    assert len(summary["rules"]) == len(test_image.manifest["rules"]) > 40
    text = subprocess.run(["auditbox", "inspect", str(test_image.out)], capture_output=True,
                          text=True, check=True).stdout
    assert "root-x86-64-verity" in text and summary["roothash"] in text
