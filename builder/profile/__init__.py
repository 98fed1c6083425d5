"""Profiles: YAML files describing an image, loaded into a typed Profile."""

from builder.profile.loader import load_profile, profile_to_dict
from builder.profile.settings import schema_json, schema_text

__all__ = ["load_profile", "profile_to_dict", "schema_json", "schema_text"]
