"""Study- and series-level documents, cut from an instance's DICOM JSON at ingest.

QIDO-RS answers with the attributes of a study or a series; keeping them as small
documents beside the index rows means a search never opens an instance's metadata for
study- or series-level results.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["SERIES_TAGS", "STUDY_TAGS", "level_documents"]

_COMMON = {"00080005", "00080201"}  # SpecificCharacterSet, TimezoneOffsetFromUTC

#: Study-level attributes besides the whole Patient group (0010,xxxx).
STUDY_TAGS = _COMMON | {
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080051",  # IssuerOfAccessionNumberSequence
    "00080090",  # ReferringPhysicianName
    "00081030",  # StudyDescription
    "00081032",  # ProcedureCodeSequence
    "00081060",  # NameOfPhysiciansReadingStudy
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
    "00321032",  # RequestingPhysician
    "00321060",  # RequestedProcedureDescription
}

SERIES_TAGS = _COMMON | {
    "00080021",  # SeriesDate
    "00080031",  # SeriesTime
    "00080060",  # Modality
    "00080070",  # Manufacturer
    "0008103E",  # SeriesDescription
    "00081090",  # ManufacturerModelName
    "00180015",  # BodyPartExamined
    "00181030",  # ProtocolName
    "0020000D",  # StudyInstanceUID
    "0020000E",  # SeriesInstanceUID
    "00200011",  # SeriesNumber
    "00200060",  # Laterality
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
    "00400275",  # RequestAttributesSequence
}

# Filtering keeps the instance document's tag order, which is already ascending.
_encoder = msgspec.json.Encoder()


def _is_study_tag(tag: str) -> bool:
    return tag in STUDY_TAGS or tag.startswith("0010")


def level_documents(instance: dict[str, Any]) -> tuple[bytes, bytes]:
    """(study document, series document) from an instance's DICOM JSON object
    (:func:`~service.dicom.dicomjson.instance_object`), before it is encoded: the
    documents keep the instance's values exactly as its metadata writes them."""
    study = {k: v for k, v in instance.items() if _is_study_tag(k) and "BulkDataURI" not in v}
    series = {k: v for k, v in instance.items() if k in SERIES_TAGS and "BulkDataURI" not in v}
    return _encoder.encode(study), _encoder.encode(series)
