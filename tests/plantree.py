"""Lay a BuildPlan out as a root tree the way the pipeline would (files, enable/mask links,
module deletion, dpkg status), so static checks can be exercised without building an image.
Files and modules go through the pipeline's own functions (builder/tree.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.plan import BuildPlan
from builder.tree import remove_modules, write_plan_files

KVER = "6.12.0-test-amd64"
# a few modules per interesting directory: some to delete, some that must stay
SAMPLE_MODULES = (
    "drivers/usb/storage/usb-storage.ko.xz", "drivers/usb/storage/uas.ko.xz",
    "drivers/usb/storage/ums-realtek.ko.xz", "drivers/net/usb/cdc_ether.ko.xz",
    "drivers/net/usb/usbnet.ko.xz", "drivers/usb/serial/ftdi_sio.ko.xz",
    "drivers/thunderbolt/thunderbolt.ko.xz", "drivers/firewire/firewire-core.ko.xz",
    "net/bluetooth/bluetooth.ko.xz", "drivers/bluetooth/btusb.ko.xz",
    "net/wireless/cfg80211.ko.xz", "sound/core/snd.ko.xz", "sound/soundcore.ko.xz",
    "drivers/media/usb/uvc/uvcvideo.ko.xz", "drivers/cdrom/cdrom.ko.xz",
    "drivers/scsi/sr_mod.ko.xz", "drivers/parport/parport.ko.xz", "drivers/char/lp.ko.xz",
    "drivers/usb/class/usblp.ko.xz", "fs/udf/udf.ko.xz", "fs/smb/client/cifs.ko.xz",
    "fs/squashfs/squashfs.ko.xz", "net/dccp/dccp.ko.xz", "net/sctp/sctp.ko.xz",
    "net/rds/rds.ko.xz", "net/tipc/tipc.ko.xz", "drivers/mmc/host/sdhci-pci.ko.xz",
    "drivers/media/pci/intel/ipu6/intel-ipu6.ko.xz", "drivers/net/wwan/t7xx/mtk_t7xx.ko.xz",
    "net/nfc/nfc.ko.xz", "drivers/usb/gadget/libcomposite.ko.xz",
    "drivers/usb/usbip/vhci-hcd.ko.xz", "drivers/input/misc/pcspkr.ko.xz",
    "drivers/pcmcia/yenta_socket.ko.xz", "drivers/misc/eeprom/at24.ko.xz",
    # must survive
    "drivers/virtio/virtio.ko.xz", "drivers/block/virtio_blk.ko.xz", "fs/erofs/erofs.ko.xz",
    "drivers/md/dm-verity.ko.xz", "net/netfilter/nf_tables.ko.xz",
    "drivers/char/tpm/tpm_tis.ko.xz", "drivers/hid/usbhid/usbhid.ko.xz",
    "sound/virtio/virtio_snd.ko.xz",
    "drivers/usb/host/xhci-hcd.ko.xz", "drivers/gpu/drm/virtio/virtio-gpu.ko.xz",
    "drivers/gpu/drm/i915/i915.ko.xz", "drivers/net/ethernet/intel/e1000e/e1000e.ko.xz",
    "drivers/nvme/host/nvme.ko.xz", "drivers/input/serio/i8042.ko.xz",
)
# what builder.initrd.record_listing writes for a terminal initrd ("mode size path")
SAMPLE_INITRD = "".join(f"{line}\n" for line in (
    "100755 1000 init", "100755 2000 usr/lib/systemd/systemd-veritysetup",
    "100755 2000 usr/lib/systemd/systemd-pcrextend",
    "100644 9000 usr/lib/x86_64-linux-gnu/libtss2-esys.so.0.0.1",
    f"100644 5000 usr/lib/modules/{KVER}/kernel/drivers/md/dm-verity.ko.xz",
    f"100644 5000 usr/lib/modules/{KVER}/kernel/drivers/nvme/host/nvme.ko.xz",
))
BASE_PACKAGES = ("base-files", "systemd", "util-linux", "python3-minimal", "usbguard",
                 "nftables", "kmod")


def dpkg_status(packages: Iterable[str]) -> str:
    return "".join(f"Package: {p}\nStatus: install ok installed\nVersion: 1\n\n"
                   for p in sorted(set(packages)))


# what pam-auth-update writes when these packages are installed (their pam-configs)
PAM_AUTH_UPDATE = {
    "libpam-pwquality": ("common-password",
                         "password\trequisite\t\t\tpam_pwquality.so retry=3\n"),
    "libpam-tmpdir": ("common-session", "session\toptional\tpam_tmpdir.so\n"),
}


def _unit_wants(unit: str) -> str:
    if unit.startswith(("getty@", "serial-getty@")):
        return "getty.target.wants"
    if unit in ("nftables.service",):
        return "sysinit.target.wants"
    if unit in ("usbguard.service",):
        return "basic.target.wants"
    return "multi-user.target.wants"


@dataclass
class FakeUser:
    name: str
    uid: int
    shell: str


def materialize(plan: BuildPlan, root: Path, *, packages: Iterable[str] = BASE_PACKAGES,
                users: Iterable[FakeUser] = (FakeUser("kiosk", 1000,
                                                      "/usr/sbin/nologin"),)) -> Path:
    """Write plan into root like the pipeline: files, units, module removal, dpkg status."""
    for d in ("usr/lib", "usr/bin", "usr/sbin", "etc/systemd/system", "var/lib/dpkg", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("lib", "bin", "sbin"):
        if not (root / link).exists():
            os.symlink(f"usr/{link}", root / link)
    base = root / "usr/lib/modules" / KVER / "kernel"
    for m in SAMPLE_MODULES:
        (base / m).parent.mkdir(parents=True, exist_ok=True)
        (base / m).write_bytes(b"\x00")
    write_plan_files(root, plan)
    for unit in plan.units_enable:
        wants = root / "etc/systemd/system" / _unit_wants(unit)
        wants.mkdir(parents=True, exist_ok=True)
        target = wants / unit
        if not target.is_symlink():
            os.symlink(f"/usr/lib/systemd/system/{unit}", target)
    for unit in plan.units_mask:
        target = root / "etc/systemd/system" / unit
        if not target.is_symlink():
            os.symlink("/dev/null", target)
    remove_modules(root, KVER, plan.modules_remove, plan.modules_keep, plan.modules_allow)
    installed = set(packages) | set(plan.packages)
    for package, (name, line) in PAM_AUTH_UPDATE.items():
        if package in installed:
            pam = root / "etc/pam.d" / name
            pam.parent.mkdir(parents=True, exist_ok=True)
            with pam.open("a") as f:
                f.write(line)
    # like builder.tree.relocate_package_db: the database lives under /usr, /var is a tmpfs
    db = root / "usr/lib/auditbox/dpkg"
    db.mkdir(parents=True, exist_ok=True)
    (db / "status").write_text(dpkg_status(installed))
    (root / "var/lib/dpkg").rmdir()
    os.symlink("/usr/lib/auditbox/dpkg", root / "var/lib/dpkg")
    (root / "usr/lib/auditbox/initrd.list").write_text(SAMPLE_INITRD)
    users = list(users)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        + "".join(f"{u.name}:x:{u.uid}:{u.uid}::/home/{u.name}:{u.shell}\n" for u in users))
    (root / "etc/shadow").write_text(
        "root:*:19000:0:99999:7:::\n" + "".join(f"{u.name}:!:19000::::::\n" for u in users))
    return root


def run_static(checks: Iterable[Any], target: Any) -> dict[str, str]:
    """Run static checks; {name: failure message} for those that failed."""
    failures: dict[str, str] = {}
    for c in checks:
        if c.where != "static":
            continue
        try:
            c.run(target)
        except AssertionError as exc:
            failures[c.name] = str(exc)
    return failures
