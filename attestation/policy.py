"""Verification policy: required PCR sets, firmware values, soft devices."""

from __future__ import annotations

from dataclasses import dataclass, field

from .soft import SOFT_PCRS
from .tpm2 import DEFAULT_PCRS

FIRMWARE_PCRS: tuple[int, ...] = (0, 1, 2, 3, 5, 6, 7)


@dataclass
class Policy:
    """What the verifier requires.

    tpm2_pcrs: the exact sha256 PCR set a tpm2 quote must select (default 0-9, 11:
        what OVMF and systemd-stub measure under swtpm).
    soft_pcrs: the exact register set a soft quote must select.
    firmware_pcrs: PCRs checked against the device's enrolled values or the
        admin allow-list (``firmware_allow_list``: pcr -> accepted sha256 values).
    trust_firmware_on_first_use: accept and record unknown firmware values on the
        first verified quote of a device (the updated record is returned).
    allow_soft: accept soft (TPM-less) devices at all.
    accept_any_pcr11_phase: accept PCR 11 at any boot phase the build predicted (e.g. a
        quote taken inside the initrd). Off by default: a running terminal must have
        reached the final phase the reference names in ``pcrs["11"]``.
    """

    tpm2_pcrs: tuple[int, ...] = DEFAULT_PCRS
    soft_pcrs: tuple[int, ...] = SOFT_PCRS
    firmware_pcrs: tuple[int, ...] = FIRMWARE_PCRS
    firmware_allow_list: dict[int, frozenset[bytes]] = field(default_factory=dict)
    trust_firmware_on_first_use: bool = True
    allow_soft: bool = False
    accept_any_pcr11_phase: bool = False
    revoked_devices: set[str] = field(default_factory=set)
    revoked_images: set[str] = field(default_factory=set)
