"""The golden values of reference.json (format 2), predicted from the UKI the build made.

What firmware and systemd-stub will measure when this image boots with nothing passed in:

* PCR 4: the ordered boot applications by Authenticode sha256. With Secure Boot on, the UKI
  alone (systemd-stub then starts the kernel through its own verified path, which the
  firmware does not measure); with Secure Boot off, the UKI and then the kernel the stub
  loads from its ``.linux`` section. Both as the real event logs of these images show.
* PCR 11: ukify's prediction after each boot phase; ``pcrs["11"]`` is the running system's
  (after ``enter-initrd:leave-initrd:sysinit:ready``).
* PCR 12 and 13: zero. The ESP holds only the UKI: no boot-loader command line, credential,
  add-on or system extension for the stub to measure.
* db_certificate_sha256: sha256 of the DER db certificate that signed the UKI (null when
  unsigned): PCR 7's EV_EFI_VARIABLE_AUTHORITY event must name it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from builder.authenticode import authenticode_digest, section
from builder.errors import BuildError
from builder.uki import Uki

READY_PHASE = "enter-initrd:leave-initrd:sysinit:ready"
NOTHING_PASSED = "00" * 32


def reference(profile_name: str, uki: Uki, cmdline: str, roothash: str | None,
              db_certificate: bytes | None) -> dict[str, Any]:
    data = uki.path.read_bytes()
    uki_sha = hashlib.sha256(data).hexdigest()
    uki_auth = authenticode_digest(data, str(uki.path))
    linux_auth = authenticode_digest(section(data, ".linux", str(uki.path)), ".linux")
    if READY_PHASE not in uki.pcr11:
        raise BuildError(f"ukify predicted no PCR 11 value for the phase {READY_PHASE} "
                         f"(got {sorted(uki.pcr11)}); the reference would not pin PCR 11")
    return {
        "format": 2,
        "image_id": f"{profile_name}-{uki_sha[:16]}",
        "pcr_bank": "sha256",
        "pcrs": {"11": uki.pcr11[READY_PHASE], "12": NOTHING_PASSED, "13": NOTHING_PASSED},
        "pcr11_phases": uki.pcr11,
        "boot_applications": {"secure_boot": [uki_auth],
                              "no_secure_boot": [uki_auth, linux_auth]},
        "db_certificate_sha256": None if db_certificate is None else
        hashlib.sha256(db_certificate).hexdigest(),
        "roothash": roothash,
        "uki_sha256": uki_sha,
        "uki_authenticode_sha256": uki_auth,
        "cmdline": cmdline,
    }
