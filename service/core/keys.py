"""Storage keys: derived from validated UIDs only, so they carry no PHI."""

from __future__ import annotations

__all__ = ["instance_key"]


def instance_key(store: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{store}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}.dcm"
