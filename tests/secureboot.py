"""Secure Boot test helpers: a throw-away db key pair, an OVMF varstore that trusts it, and a
copy of a built image whose UKI was changed after signing.

Only host tools: openssl, virt-fw-vars (virt-firmware) and mtools.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OVMF_EMPTY_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# owner GUID recorded with the enrolled PK, KEK and db entries (any fixed GUID will do)
OWNER_GUID = "5b1f8a52-6f3e-4c1b-9d0e-a0d1c7e0b0b5"
UKI_PATH = "::/EFI/BOOT/BOOTX64.EFI"
SUBJECT = "/CN=auditbox test db"
TOOLS = ("openssl", "virt-fw-vars", "mcopy")


@dataclass(frozen=True)
class KeyPair:
    key: Path       # PEM private key (RSA 2048)
    cert: Path      # PEM self-signed X.509 certificate


def make_key_pair(directory: Path) -> KeyPair:
    """A self-signed RSA 2048 Secure Boot key pair (CN auditbox test db) in directory.

    An existing pair in directory is reused, so a rebuilt image keeps matching a varstore
    made earlier.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / "db.key", directory / "db.crt")
    if pair.key.is_file() and pair.cert.is_file():
        return pair
    tmp_key, tmp_cert = directory / "db.key.new", directory / "db.crt.new"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-sha256", "-days", "3650", "-subj", SUBJECT,
                    "-keyout", str(tmp_key), "-out", str(tmp_cert)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp_key.chmod(0o600)
    os.replace(tmp_key, pair.key)
    os.replace(tmp_cert, pair.cert)
    return pair


def make_enrolled_varstore(cert: Path, out: Path, template: Path = OVMF_EMPTY_VARS) -> Path:
    """An OVMF varstore with cert as PK, KEK and db, and Secure Boot enabled."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    subprocess.run(["virt-fw-vars", "--input", str(template), "--output", str(out),
                    "--set-pk", OWNER_GUID, str(cert),
                    "--add-kek", OWNER_GUID, str(cert),
                    "--add-db", OWNER_GUID, str(cert),
                    "--secure-boot"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not out.is_file():
        raise RuntimeError(f"virt-fw-vars wrote no {out}")
    return out


def esp_partition(manifest: dict[str, Any]) -> tuple[int, int]:
    """(offset, size) in bytes of the ESP inside image.raw, from the build manifest."""
    esp = next(p for p in manifest["partitions"] if p["type"] == "esp")
    return int(esp["offset"]), int(esp["raw_size"])


def pe_section(data: bytes, name: str) -> tuple[int, int]:
    """(file offset, size on disk) of the PE section called name."""
    if data[:2] != b"MZ":
        raise ValueError("not a PE image (no MZ header)")
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("not a PE image (no PE signature)")
    nsections, = struct.unpack_from("<H", data, pe + 6)
    opt_size, = struct.unpack_from("<H", data, pe + 20)
    table = pe + 24 + opt_size
    for i in range(nsections):
        entry = table + 40 * i
        raw_name = data[entry:entry + 8].rstrip(b"\0").decode("ascii", "replace")
        vsize, _vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, entry + 8)
        if raw_name == name:
            return raw_ptr, min(vsize, raw_size) if vsize else raw_size
    raise ValueError(f"no {name} section in the PE image")


def change_cmdline_byte(uki: bytes) -> bytes:
    """The UKI with exactly one byte of its .cmdline section changed.

    "loglevel=0" becomes "loglevel=7" where present, so that firmware which failed to
    check the signature would boot a kernel that says so loudly on the console;
    otherwise the first letter of the command line changes case.
    """
    offset, size = pe_section(uki, ".cmdline")
    section = uki[offset:offset + size]
    at = section.find(b"loglevel=0")
    if at >= 0:
        pos, new = offset + at + len(b"loglevel="), ord("7")
    else:
        first = next(i for i, b in enumerate(section) if chr(b).isalpha())
        pos, new = offset + first, uki[offset + first] ^ 0x20
    changed = bytearray(uki)
    changed[pos] = new
    return bytes(changed)


def _mtools_env() -> dict[str, str]:
    # systemd-repart's vfat has no CHS geometry mtools would like; skip that check
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def read_esp_file(image: Path, manifest: dict[str, Any], path: str = UKI_PATH) -> bytes:
    """One file from the image's ESP (mtools path, e.g. ::/EFI/BOOT/BOOTX64.EFI)."""
    offset, size = esp_partition(manifest)
    with tempfile.TemporaryDirectory(prefix="auditbox-esp-") as tmp:
        esp = Path(tmp) / "esp.img"
        _copy_range(image, offset, size, esp)
        out = Path(tmp) / "file"
        subprocess.run(["mcopy", "-n", "-i", str(esp), path, str(out)], check=True,
                       env=_mtools_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return out.read_bytes()


def make_changed_uki_image(image: Path, manifest: dict[str, Any], out: Path,
                           change: Callable[[bytes], bytes] = change_cmdline_byte) -> Path:
    """A copy of image at out whose /EFI/BOOT/BOOTX64.EFI went through change (bytes -> bytes).

    The ESP is copied out at the manifest's offset, the UKI replaced in it with mtools, and
    the ESP written back at the same offset; nothing else in the image changes.
    """
    offset, size = esp_partition(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="auditbox-esp-") as tmp:
        esp = Path(tmp) / "esp.img"
        _copy_range(image, offset, size, esp)
        uki = Path(tmp) / "BOOTX64.EFI"
        env = _mtools_env()
        subprocess.run(["mcopy", "-n", "-i", str(esp), UKI_PATH, str(uki)], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        original = uki.read_bytes()
        changed = change(original)
        if changed == original:
            raise ValueError("the change left the UKI as it was")
        uki.write_bytes(changed)
        subprocess.run(["mcopy", "-o", "-i", str(esp), str(uki), UKI_PATH], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if esp.stat().st_size != size:
            raise RuntimeError("mtools changed the ESP's size")
        partial = out.with_name(out.name + ".partial")
        shutil.copyfile(image, partial)
        with esp.open("rb") as src, partial.open("r+b") as dst:
            dst.seek(offset)
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(partial, out)
    return out


def _copy_range(src_path: Path, offset: int, size: int, dst_path: Path) -> None:
    with src_path.open("rb") as src, dst_path.open("wb") as dst:
        src.seek(offset)
        left = size
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise ValueError(f"{src_path} ends inside the range {offset}+{size}")
            dst.write(chunk)
            left -= len(chunk)
