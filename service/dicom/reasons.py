"""PS3.18 Table 10.5.3-1 / PS3.4 Annex GG failure reason codes used in STOW responses."""

from __future__ import annotations

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_MISMATCH",
    "DUPLICATE_CONFLICT",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "STUDY_MISMATCH",
]

#: Processing failure: the service failed while storing a valid instance.
PROCESSING_FAILURE = 0x0110
#: Refused: the SOP Class is not supported.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Refused: out of resources (instance too large, storage full).
OUT_OF_RESOURCES = 0xA700
#: Error: data set does not match SOP Class / the study in the request URL.
STUDY_MISMATCH = 0xA900
#: The same code for a data set that is not what its C-STORE request announced.
DATASET_MISMATCH = STUDY_MISMATCH
#: Error: cannot understand (not Part 10, truncated, missing or malformed UIDs).
CANNOT_UNDERSTAND = 0xC000
#: The instance already exists with different content (as Microsoft's DICOM service).
DUPLICATE_CONFLICT = 0xB00E
