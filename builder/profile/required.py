"""`requires`: keys a base profile leaves for the profiles extending it to fill in.

The shipped audit-laptop.yaml names no gateway: a build from it alone (or from a child that
forgets one) must stop with one line naming every key still unset, never produce an image
with a placeholder destination.
"""

from __future__ import annotations

from typing import Any

from builder.errors import InputError
from builder.profile.model import Profile


def _value(profile: Profile, key: str) -> Any:
    value: Any = profile
    for part in key.split("."):
        value = getattr(value, part)
    return value


def is_set(profile: Profile, key: str) -> bool:
    """Some file of the profile chain gives key a value (not null, not an empty list)."""
    value = _value(profile, key)
    return key in profile.origins and value is not None and value != []


def check_required(profile: Profile) -> None:
    """Raise InputError (one line, at the `requires` entry) if a required key is unset."""
    missing = [k for k in profile.requires if not is_set(profile, k)]
    if not missing:
        return
    index = profile.requires.index(missing[0])
    origin = profile.origins.get(f"requires[{index}]") or profile.origins.get("requires")
    base = origin.file.name if origin else "the base profile"
    raise InputError(f"not set; {base} is a base profile: build a profile that extends it and "
                     f"sets {', '.join(missing)}",
                     file=origin.file if origin else profile.source,
                     line=origin.line if origin else None, key=missing[0])
