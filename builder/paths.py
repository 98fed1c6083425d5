"""Where auditbox finds its data: the overlay templates and the shipped profiles (with the
rule catalogue). They live at the top of the repository (overlays/, profiles/) and the
builder package reaches them as builder/data/overlays and builder/data/profiles: symlinks
in a checkout (an editable install), copies in a wheel (pyproject.toml package-data), so
the same paths work in both.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
OVERLAYS = (DATA / "overlays").resolve()
PROFILES = (DATA / "profiles").resolve()
RULES = PROFILES / "rules"
DEFAULT_PROFILE = PROFILES / "audit-laptop.yaml"
