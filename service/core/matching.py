"""QIDO-RS matching rules as plain Python predicates, independent of any backend.

The SQLite index expresses these rules in SQL; an index that cannot (DynamoDB) fetches
candidates from its own indexes and keeps those these predicates accept. Both store the
same values: strings stripped, times as :func:`~service.core.search.time_bound` text,
numbers as integers, person names as :func:`name_rows`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from service.core.search import Match, normalise_name, time_bound

__all__ = [
    "NAME_ATTRIBUTES",
    "NUMBER_KEYWORDS",
    "TIME_KEYWORDS",
    "column_value",
    "matches_modalities",
    "matches_name",
    "matches_value",
    "name_rows",
    "number",
]

NAME_ATTRIBUTES = ("PatientName", "ReferringPhysicianName")
TIME_KEYWORDS = frozenset({"StudyTime", "SeriesTime", "PerformedProcedureStepStartTime"})
NUMBER_KEYWORDS = frozenset({"SeriesNumber", "InstanceNumber"})


def number(value: str | None) -> int | None:
    try:
        return int((value or "").strip())
    except ValueError:
        return None


def column_value(keyword: str, raw: str | None) -> str | int | None:
    """The value an index keeps for an attribute, as matching compares it."""
    if keyword in TIME_KEYWORDS:
        return time_bound(raw.strip()) if raw else None
    if keyword in NUMBER_KEYWORDS:
        return number(raw)
    return raw.strip() if raw else None


def name_rows(value: str) -> list[tuple[str, str]]:
    """(kind, value) rows for one PN value: each non-empty component group, normalised
    as a whole (``g``), and each word of each group (``w``)."""
    rows: list[tuple[str, str]] = []
    for group in value.split("="):
        normal = normalise_name(group)
        if not normal:
            continue
        rows.append(("g", normal))
        rows.extend(("w", word) for word in sorted(set(re.split(r"[\s^]+", normal)) - {""}))
    return rows


@lru_cache(maxsize=256)
def _pattern(wildcard: str) -> re.Pattern[str]:
    """A DICOM wildcard pattern (``*`` any run, ``?`` one character), case-sensitive."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wildcard)
    return re.compile("".join(parts), re.DOTALL)


def matches_value(match: Match, value: str | int | None) -> bool:
    """Whether a stored value satisfies ``match``; a missing value matches nothing."""
    if value is None:
        return False
    kind, values = match.kind, match.values
    if kind == "number":
        return value == int(values[0])
    if isinstance(value, int):
        return kind == "equal" and str(value) == values[0]
    if kind == "equal":
        return value == values[0]
    if kind == "any":
        return value in values
    if kind == "wildcard":
        return _pattern(values[0]).fullmatch(value) is not None
    if kind == "range":
        low, high = values
        return (not low or value >= low) and (not high or value <= high)
    raise ValueError(f"unsupported match kind {kind!r} for {match.keyword}")


def matches_name(match: Match, value: str | None) -> bool:
    """Person-name matching against a stored PN value: the query is compared with each
    component group; ``words`` asks every query word to begin some word of the name."""
    if not value:
        return False
    rows = name_rows(value)
    if match.kind == "words":
        words = [w for kind, w in rows if kind == "w"]
        return all(
            any(matches_value(Match(match.keyword, "wildcard", (q + "*",)), w) for w in words)
            for q in match.values
        )
    return any(matches_value(match, g) for kind, g in rows if kind == "g")


def matches_modalities(match: Match, modalities: Iterable[str]) -> bool:
    """ModalitiesInStudy: some series of the study has a matching modality."""
    return any(matches_value(match, m) for m in modalities if m)
