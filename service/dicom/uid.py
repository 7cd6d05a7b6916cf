"""UID syntax (PS3.5 §9.1): checked before a UID goes into a query or a storage key."""

from __future__ import annotations

import re

from service.errors import MalformedRequest

__all__ = ["is_valid_uid", "require_uid"]

# Components are digits without leading zeros ("0" alone is fine), joined by dots;
# at most 64 characters in all.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def require_uid(value: str, name: str) -> str:
    """Return ``value`` if it is a well-formed UID, else raise a 400 naming ``name``."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise MalformedRequest(f"{name} {shown!r} is not a valid DICOM UID (PS3.5 §9.1)")
    return value
