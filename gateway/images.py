"""Registered images: signed reference.json files the gateway attests terminals against.

``add_image(OUT/)`` reads OUT/reference.json and OUT/reference.json.sig, verifies the
signature with a trusted build key (gateway.yaml ``trusted_build_keys``: the keys the
running gateway also trusts) and stores the exact bytes. ``references()`` re-verifies
every stored reference before the verifier uses it, so a row edited in the database is
never trusted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.errors import ReferenceValueError
from attestation.reference import load_public_key, verify_reference_bytes
from builder.errors import InputError

from .audit import Auditor
from .store.base import Image, Store, StoreConflict

MAX_FILE = 1024 * 1024


def load_trusted_keys(paths: tuple[Path, ...] | list[Path]) -> list[Ed25519PublicKey]:
    keys = []
    for p in paths:
        try:
            keys.append(load_public_key(p))
        except ReferenceValueError as exc:
            raise InputError(str(exc), file=p, key="trusted_build_keys") from None
    return keys


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=path) from None
    if len(data) > MAX_FILE:
        raise InputError(f"larger than {MAX_FILE} bytes", file=path)
    return data


def read_signed_reference(out_dir: Path,
                          keys: list[Ed25519PublicKey]) -> tuple[dict[str, Any], bytes, bytes]:
    """(checked reference data, reference.json bytes, reference.json.sig bytes)."""
    if not keys:
        raise InputError("no trusted build key: list the build's build-key.pub in "
                         "trusted_build_keys in gateway.yaml", key="trusted_build_keys")
    ref_path = out_dir / "reference.json" if out_dir.is_dir() else out_dir
    body = _read(ref_path)
    sig = _read(ref_path.with_name(ref_path.name + ".sig"))
    try:
        data = verify_reference_bytes(body, sig, keys)
    except ReferenceValueError as exc:
        raise InputError(str(exc), file=ref_path) from None
    return data, body, sig


def add_image(store: Store, auditor: Auditor, out_dir: Path, keys: list[Ed25519PublicKey],
              by: str, now: float | None = None) -> tuple[Image, dict[str, Any]]:
    """Verify and register OUT/reference.json; (the stored image, its checked data)."""
    data, body, sig = read_signed_reference(out_dir, keys)
    image = Image(data["image_id"], body, sig, time.time() if now is None else now, by)
    try:
        store.add_image(image)
    except StoreConflict:
        raise InputError(f"image {image.image_id!r} is already registered",
                         file=out_dir) from None
    auditor.log("image.add", actor=by, image_id=image.image_id,
                uki_sha256=data["uki_sha256"], roothash=data["roothash"])
    return image, data


def revoke_image(store: Store, auditor: Auditor, image_id: str, by: str,
                 now: float | None = None) -> bool:
    done = store.revoke_image(image_id, time.time() if now is None else now)
    if done:
        auditor.log("image.revoke", actor=by, image_id=image_id)
    return done


def references(store: Store, keys: list[Ed25519PublicKey]) -> dict[str, dict[str, Any]]:
    """image id -> verified reference data, for every registered image not revoked whose
    signature still verifies with a trusted key (others are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for image in store.list_images():
        if image.revoked_at is not None:
            continue
        try:
            data = verify_reference_bytes(image.reference, image.signature, keys)
        except ReferenceValueError:
            continue
        if data["image_id"] == image.image_id:
            out[image.image_id] = data
    return out


def revoked_ids(store: Store) -> set[str]:
    return {i.image_id for i in store.list_images() if i.revoked_at is not None}
