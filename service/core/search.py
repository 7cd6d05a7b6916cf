"""The search model: what QIDO-RS can match and return, independent of any backend.

A :class:`Query` is what every Index implementation answers (SQLite now, DynamoDB
later). It is built from QIDO-RS parameters by :mod:`service.core.qido`; the index only
sees validated, normalised values.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Literal, NamedTuple

import msgspec

__all__ = [
    "ATTRIBUTES",
    "BY_KEYWORD",
    "BY_TAG",
    "Attribute",
    "Level",
    "Match",
    "Query",
    "SearchHit",
    "SearchPage",
    "normalise_name",
    "time_bound",
]


class Level(IntEnum):
    STUDY = 1
    SERIES = 2
    INSTANCE = 3


class Attribute(NamedTuple):
    keyword: str
    tag: str  # eight upper-case hex digits, as in DICOM JSON
    vr: str
    level: Level
    #: Whether the index can match on it (PS3.18 Table 10.6.1-5 keys, and a few more).
    matchable: bool
    #: Whether QIDO-RS returns it by default at its level (PS3.18 Table 10.6.3-x).
    default: bool


_S, _E, _I = Level.STUDY, Level.SERIES, Level.INSTANCE

ATTRIBUTES: tuple[Attribute, ...] = (
    # Study level: Patient and Study modules.
    Attribute("StudyDate", "00080020", "DA", _S, True, True),
    Attribute("StudyTime", "00080030", "TM", _S, True, True),
    Attribute("AccessionNumber", "00080050", "SH", _S, True, True),
    Attribute("ModalitiesInStudy", "00080061", "CS", _S, True, True),
    Attribute("ReferringPhysicianName", "00080090", "PN", _S, True, True),
    Attribute("StudyDescription", "00081030", "LO", _S, True, False),
    Attribute("PatientName", "00100010", "PN", _S, True, True),
    Attribute("PatientID", "00100020", "LO", _S, True, True),
    Attribute("IssuerOfPatientID", "00100021", "LO", _S, True, False),
    Attribute("PatientBirthDate", "00100030", "DA", _S, True, True),
    Attribute("PatientSex", "00100040", "CS", _S, True, True),
    Attribute("StudyInstanceUID", "0020000D", "UI", _S, True, True),
    Attribute("StudyID", "00200010", "SH", _S, True, True),
    Attribute("NumberOfStudyRelatedSeries", "00201206", "IS", _S, False, True),
    Attribute("NumberOfStudyRelatedInstances", "00201208", "IS", _S, False, True),
    # Series level.
    Attribute("Modality", "00080060", "CS", _E, True, True),
    Attribute("SeriesDate", "00080021", "DA", _E, True, False),
    Attribute("SeriesTime", "00080031", "TM", _E, True, False),
    Attribute("SeriesDescription", "0008103E", "LO", _E, True, True),
    Attribute("BodyPartExamined", "00180015", "CS", _E, True, False),
    Attribute("SeriesInstanceUID", "0020000E", "UI", _E, True, True),
    Attribute("SeriesNumber", "00200011", "IS", _E, True, True),
    Attribute("NumberOfSeriesRelatedInstances", "00201209", "IS", _E, False, True),
    Attribute("PerformedProcedureStepStartDate", "00400244", "DA", _E, True, True),
    Attribute("PerformedProcedureStepStartTime", "00400245", "TM", _E, True, True),
    # Instance level.
    Attribute("SOPClassUID", "00080016", "UI", _I, True, True),
    Attribute("SOPInstanceUID", "00080018", "UI", _I, True, True),
    Attribute("InstanceNumber", "00200013", "IS", _I, True, True),
    Attribute("NumberOfFrames", "00280008", "IS", _I, False, True),
    Attribute("Rows", "00280010", "US", _I, False, True),
    Attribute("Columns", "00280011", "US", _I, False, True),
    Attribute("BitsAllocated", "00280100", "US", _I, False, True),
)

BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
BY_TAG = {a.tag: a for a in ATTRIBUTES}


def normalise_name(value: str) -> str:
    """A PN component group as matched, on the query side and in the index alike:
    upper-case, without padding or trailing empty components."""
    return value.strip().rstrip("^ ").upper()


_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


def time_bound(value: str, *, upper: bool = False) -> str | None:
    """A TM value as ``HHMMSS.ffffff``, comparable as text; None if it is not TM syntax.

    ``upper``: the last instant of the period the value names (``10`` is 10:00:00 to
    10:59:59.999999), so that a range's upper bound covers what it names.
    """
    m = _TM.match(value)
    if m is None:
        return None
    hours, minutes, seconds, fraction = m.groups()
    fill = "59" if upper else "00"
    digits = (fraction or ".")[1:].ljust(6, "9" if upper else "0")
    return f"{hours}{minutes or fill}{seconds or fill}.{digits}"


class Match(msgspec.Struct, frozen=True):
    """One matching condition, with values already validated and normalised.

    - ``equal``: ``values == (v,)``; PN values upper-cased, trailing empty components
      dropped.
    - ``wildcard``: ``values == (pattern,)`` with ``*`` and ``?`` (PN upper-cased).
    - ``range``: ``values == (low, high)``; either may be ``""`` for an open end. Times
      are normalised to ``HHMMSS.ffffff``.
    - ``any``: one of ``values`` (UID lists, modality lists).
    - ``words``: PN fuzzy matching: every value is a prefix of some name component.
    - ``number``: IS equality, ``values == (str(int),)``.
    """

    keyword: str
    kind: Literal["equal", "wildcard", "range", "any", "words", "number"]
    values: tuple[str, ...]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    matches: tuple[Match, ...] = ()
    limit: int
    offset: int = 0


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    """One result row with the stored documents of its levels (DICOM JSON objects)."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    study: bytes
    series: bytes | None = None
    instance: bytes | None = None
    study_series: int = 0
    study_instances: int = 0
    series_instances: int = 0
    modalities: tuple[str, ...] = ()


class SearchPage(msgspec.Struct, frozen=True, kw_only=True):
    hits: list[SearchHit]
    #: True when results exist beyond this page.
    more: bool
    #: Something the client should know about how the page was found (a backend that
    #: had to scan, results that may be incomplete), for a ``Warning: 299`` header.
    warning: str = ""
