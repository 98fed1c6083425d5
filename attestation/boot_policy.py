"""The verifier's ``policy`` step: the booted state against the image's signed reference.

tpm2, in this order (the first difference is the refusal, and it names the PCR; a log
without the SecureBoot variable is refused at PCR 7 first when Secure Boot is required):

1. PCR 4, the boot path: the ordered Authenticode digests of the EV_EFI_BOOT_SERVICES_
   APPLICATION events must equal the reference's list for the measured Secure Boot state
   (``boot_applications``: with Secure Boot on, the UKI alone; off, the UKI then the kernel
   systemd-stub loads from it). A chainloader before the UKI, anything between, a missing
   or reordered application is refused.
2. PCR 11, the UKI's sections: the reference's value after the final boot phase (or, with
   ``Policy.accept_any_pcr11_phase``, any phase the build predicted).
3. PCR 12 and 13 (and any other PCR the reference names): their value with nothing passed
   in. systemd-stub measures a boot-loader command line, credentials and add-ons into
   PCR 12 and system extensions into PCR 13.
4. PCR 7, Secure Boot, when ``Policy.require_secure_boot`` (the default): SecureBoot
   measured as 1; PK, KEK, db and dbx measured; the image signed for Secure Boot (the
   reference names its db certificate); every EV_EFI_VARIABLE_AUTHORITY event after PCR 7's
   separator (what verified the boot path) is that certificate, and there is one.
5. Firmware PCRs (``Policy.firmware_pcrs``, 0-3, 6 and 7 by default) equal the device's
   enrolled values, or the admin allow-list, or are recorded on first use. PCR 7 is among
   them, so PK/KEK/db/dbx stay as enrolled.

soft: the registers hold exactly the measurements of the reference image (register 4:
``uki_sha256=<reference uki_sha256>``; register 11: ``cmdline=<reference cmdline>``).
"""

from __future__ import annotations

from typing import Any

from . import eventlog
from .errors import VerificationError
from .logcheck import LogFacts
from .policy import Policy

STEP = "policy"
ZERO = "00" * 32
_WHY_NOT_ZERO = {
    12: "a boot-loader command line, credential or add-on was passed to systemd-stub",
    13: "a system extension was passed to systemd-stub",
}


def _fail(reason: str) -> VerificationError:
    return VerificationError(STEP, reason)


def check(mode: str, rec: dict[str, Any], facts: LogFacts, values: dict[int, bytes],
          ref: dict[str, Any] | None, pol: Policy) -> dict[str, str]:
    """Refuse, or return the firmware PCR values to record for the device (first use)."""
    if ref is None:
        raise _fail(f"no trusted reference for image {rec['image_id']!r}")
    if mode == "soft":
        _soft(facts, ref, pol)
        return {}
    if pol.require_secure_boot and facts.secure_boot is None:
        raise _fail("PCR 7: the SecureBoot variable was not measured (policy requires "
                    "Secure Boot)")
    _boot_path(facts, ref)
    _pcr11(values, ref, pol)
    _reference_pcrs(values, ref)
    if pol.require_secure_boot:
        _secure_boot(facts, ref)
    return _firmware(rec, values, pol)


def _soft(facts: LogFacts, ref: dict[str, Any], pol: Policy) -> None:
    if not pol.allow_soft:
        raise _fail("policy does not allow soft devices")
    want = {
        4: [(eventlog.EV_EFI_BOOT_SERVICES_APPLICATION,
             b"uki_sha256=" + ref["uki_sha256"].encode())],
        11: [(eventlog.EV_IPL, b"cmdline=" + ref["cmdline"].encode())],
    }
    for register, expected in want.items():
        have = [(t, d) for r, t, d in facts.measurements if r == register]
        if have != expected:
            shown = have[0][1][:60] if have else b"nothing"
            raise _fail(f"register {register}: measured {shown!r}, not the reference image's "
                        "(other image?)")
    for register, _typ, data in facts.measurements:
        if register not in want:
            raise _fail(f"register {register}: unexpected measurement {data[:40]!r}")


def _short(digest: bytes | str) -> str:
    text = digest.hex() if isinstance(digest, bytes) else digest
    return text[:16] + "..."


def _boot_path(facts: LogFacts, ref: dict[str, Any]) -> None:
    state = "secure_boot" if facts.secure_boot else "no_secure_boot"
    want = [bytes.fromhex(h) for h in ref["boot_applications"][state]]
    have = list(facts.boot_applications)
    if have == want:
        return
    sb = "on" if facts.secure_boot else "off"
    prefix = f"PCR 4: boot applications (Secure Boot {sb}) are not image {ref['image_id']}'s"
    for i, (h, w) in enumerate(zip(have, want, strict=False)):
        if h != w:
            what = "the UKI" if i == 0 else f"application {i + 1}"
            if w in have:
                raise _fail(f"{prefix}: {_short(h)} ran before {what} ({_short(w)})")
            raise _fail(f"{prefix}: {_short(h)} ran where {what} ({_short(w)}) was expected")
    if len(have) > len(want):
        raise _fail(f"{prefix}: an extra application {_short(have[len(want)])} ran after "
                    f"the expected {len(want)}")
    raise _fail(f"{prefix}: {len(want) - len(have)} expected application(s) missing, first "
                f"{_short(want[len(have)])}")


def _pcr11(values: dict[int, bytes], ref: dict[str, Any], pol: Policy) -> None:
    if 11 not in values:
        return
    have = values[11].hex()
    if have == ref["pcrs"]["11"]:
        return
    if have in ref.get("pcr11_phases", {}).values():
        if pol.accept_any_pcr11_phase:
            return
        raise _fail("PCR 11 is at an earlier boot phase than the reference's final one "
                    "(quote not from the running system)")
    raise _fail(f"PCR 11 differs from the reference for {ref['image_id']} (another UKI)")


def _reference_pcrs(values: dict[int, bytes], ref: dict[str, Any]) -> None:
    for key, want in sorted(ref["pcrs"].items(), key=lambda kv: int(kv[0])):
        i = int(key)
        if i == 11 or i not in values or values[i].hex() == want:
            continue
        why = _WHY_NOT_ZERO.get(i) if want == ZERO else None
        raise _fail(f"PCR {i} is not the reference value for {ref['image_id']}"
                    + (f" ({why})" if why else ""))


def _secure_boot(facts: LogFacts, ref: dict[str, Any]) -> None:
    if not facts.secure_boot:
        raise _fail("PCR 7: Secure Boot is off (SecureBoot measured as 0; policy requires "
                    "Secure Boot)")
    missing = sorted({"PK", "KEK", "db", "dbx"} - facts.secure_boot_variables)
    if missing:
        raise _fail(f"PCR 7: Secure Boot variables {', '.join(missing)} were not measured")
    cert = ref["db_certificate_sha256"]
    if cert is None:
        raise _fail(f"PCR 7: image {ref['image_id']} is not signed for Secure Boot "
                    "(policy requires Secure Boot)")
    if not facts.authorities:
        raise _fail("PCR 7: no EV_EFI_VARIABLE_AUTHORITY event: nothing was verified "
                    "against db")
    for got in facts.authorities:
        if got != cert:
            raise _fail(f"PCR 7: the boot path was verified by {_short(got)}, not the "
                        f"image's db certificate {_short(cert)}")


def _firmware(rec: dict[str, Any], values: dict[int, bytes], pol: Policy) -> dict[str, str]:
    new_fw: dict[str, str] = {}
    enrolled = rec["firmware_pcrs"]
    for i in pol.firmware_pcrs:
        if i not in values:
            continue
        v = values[i]
        if str(i) in enrolled:
            if enrolled[str(i)] != v.hex():
                raise _fail(f"firmware PCR {i} differs from the enrolled value")
        elif i in pol.firmware_allow_list:
            if v not in pol.firmware_allow_list[i]:
                raise _fail(f"firmware PCR {i} is not on the allow-list")
        elif pol.trust_firmware_on_first_use:
            new_fw[str(i)] = v.hex()
        else:
            raise _fail(f"firmware PCR {i}: no enrolled or allowed value")
    return new_fw
