"""Verification policy: what the verifier requires beyond the signed reference.

The gateway builds one ``Policy`` from its configuration:

* ``require_secure_boot`` (default True; gateway config "require Secure Boot"): PCR 7 must
  show Secure Boot on with the image's db certificate (see ``attestation.boot_policy``).
  Turning it off is for test set-ups with unsigned images only; ``warnings()`` returns the
  sentence to log loudly at start-up while it is off.
* ``tpm2_pcrs``: the exact sha256 PCR set a tpm2 quote must select: 0-9 (firmware, boot
  path, Secure Boot, the kernel's own measurements of its command line and initrd),
  11 (the UKI), 12 and 13 (what was passed to systemd-stub). PCR 10 (IMA) and 14-15
  (shim's MOK list; systemd's per-boot machine-id) are left out: see docs/threat-model.md.
* ``soft_pcrs``: the exact register set a soft quote must select.
* ``firmware_pcrs``: PCRs checked against the device's enrolled values or the admin
  allow-list (``firmware_allow_list``: pcr -> accepted sha256 values);
  ``trust_firmware_on_first_use`` records unknown firmware values at the first verified
  quote of a device (the updated record is returned).
* ``allow_soft``: accept soft (TPM-less) devices at all.
* ``accept_any_pcr11_phase``: accept PCR 11 at any boot phase the build predicted (e.g. a
  quote taken inside the initrd). Off by default: a running terminal must have reached
  the final phase the reference names in ``pcrs["11"]``.
* ``revoked_devices`` / ``revoked_images``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .soft import SOFT_PCRS
from .tpm2 import DEFAULT_PCRS

# PCR 5 (the GPT and Exit Boot Services) is replayed but not pinned: the terminal's first
# boot adds the state partition with systemd-repart after the firmware measured the table,
# so PCR 5 changes once, at the first reboot after enrollment (docs/threat-model.md)
FIRMWARE_PCRS: tuple[int, ...] = (0, 1, 2, 3, 6, 7)


@dataclass
class Policy:
    tpm2_pcrs: tuple[int, ...] = DEFAULT_PCRS
    soft_pcrs: tuple[int, ...] = SOFT_PCRS
    firmware_pcrs: tuple[int, ...] = FIRMWARE_PCRS
    firmware_allow_list: dict[int, frozenset[bytes]] = field(default_factory=dict)
    trust_firmware_on_first_use: bool = True
    allow_soft: bool = False
    accept_any_pcr11_phase: bool = False
    require_secure_boot: bool = True
    revoked_devices: set[str] = field(default_factory=set)
    revoked_images: set[str] = field(default_factory=set)

    def warnings(self) -> list[str]:
        """Sentences an operator must see (log them at start-up) for weakened settings."""
        out = []
        if not self.require_secure_boot:
            out.append("Secure Boot is NOT required: terminals booted with Secure Boot off, "
                       "or from unsigned images, are accepted (test set-ups only)")
        if self.allow_soft:
            out.append("soft (TPM-less) attestation is accepted: root on such a terminal "
                       "can forge its evidence (development and CI only)")
        if self.accept_any_pcr11_phase:
            out.append("PCR 11 is accepted at any predicted boot phase, not only the "
                       "running system's")
        return out
