"""QIDO-RS use case: turn search parameters into a :class:`Query`, answer it from the
index, and shape each hit into the DICOM JSON object PS3.18 §10.6.3 describes.

Parsing is strict where a wrong answer would follow (an unknown attribute, a bad date,
a bad limit: 400 with a message) and lenient where the standard says so (an attribute
the index cannot match on is ignored and named in a ``Warning: 299`` header).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import msgspec
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from service.core.search import (
    ATTRIBUTES,
    BY_KEYWORD,
    Level,
    Match,
    Query,
    SearchHit,
    normalise_name,
    time_bound,
)
from service.dicom.uid import is_valid_uid
from service.errors import MalformedRequest
from service.index.base import Index

__all__ = ["QidoService", "Search", "parse_search"]

_RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DA = re.compile(r"^\d{8}$")
_LIST_VRS = {"UI"}
_MODALITY_LISTS = {"Modality", "ModalitiesInStudy"}
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_COMPUTED = {"00080056", "00080061", "00081190", "00201206", "00201208", "00201209"}


class Search(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed QIDO-RS request: the index query and what to return."""

    query: Query
    #: Tags to return besides the level's defaults (includefield, matching keys).
    include: frozenset[str]
    include_all: bool
    #: Keywords given as matching keys that cannot be matched on here (ignored).
    ignored: tuple[str, ...]


def _resolve(key: str, parameter: str) -> tuple[str, str]:
    """(keyword, tag) of a keyword or 8-hex-digit tag; 400 if it names no attribute."""
    if _TAG.match(key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return keyword, key.upper()
    else:
        tag = tag_for_keyword(key)
        if tag is not None:
            return key, f"{tag:08X}"
    raise MalformedRequest(f"{parameter} {key!r} is not a DICOM attribute keyword or tag")


def _date(value: str, keyword: str) -> str:
    try:
        if not _DA.match(value):
            raise ValueError
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise MalformedRequest(
            f"{keyword}={value!r} is not a date (YYYYMMDD) or date range (YYYYMMDD-YYYYMMDD)"
        ) from None
    return value


def _time(value: str, keyword: str, *, upper: bool) -> str:
    bound = time_bound(value, upper=upper)
    if bound is None or int(bound[:2]) > 23 or int(bound[2:4]) > 59 or int(bound[4:6]) > 60:
        raise MalformedRequest(
            f"{keyword}={value!r} is not a time (HH[MM[SS[.ffffff]]]) or time range"
        )
    return bound


def _range(value: str, keyword: str, vr: str) -> Match:
    low, sep, high = value.partition("-")
    if not sep:
        if vr == "DA":
            return Match(keyword, "equal", (_date(value, keyword),))
        return Match(
            keyword,
            "range",
            (_time(value, keyword, upper=False), _time(value, keyword, upper=True)),
        )
    if not low and not high:
        raise MalformedRequest(f"{keyword}={value!r}: a range needs at least one end")
    if vr == "DA":
        bounds = (_date(low, keyword) if low else "", _date(high, keyword) if high else "")
    else:
        bounds = (
            _time(low, keyword, upper=False) if low else "",
            _time(high, keyword, upper=True) if high else "",
        )
    return Match(keyword, "range", bounds)


def _string_values(value: str, keyword: str) -> list[str]:
    separators = r"[,\\]" if keyword in _MODALITY_LISTS else r"\\"
    return [v for v in re.split(separators, value) if v]


def _match(keyword: str, vr: str, value: str, fuzzy: bool) -> Match:
    if vr in ("DA", "TM"):
        return _range(value, keyword, vr)
    if vr in _LIST_VRS:
        uids = [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]
        for uid in uids:
            if not is_valid_uid(uid):
                raise MalformedRequest(f"{keyword}: {uid[:80]!r} is not a valid DICOM UID")
        return Match(keyword, "any", tuple(uids))
    if vr == "IS":
        try:
            return Match(keyword, "number", (str(int(value)),))
        except ValueError:
            raise MalformedRequest(f"{keyword}={value!r} is not an integer") from None
    if vr == "PN":
        if fuzzy and "*" not in value and "?" not in value:
            words = [w.upper() for w in re.split(r"[\s^=]+", value) if w]
            return Match(keyword, "words", tuple(words))
        name = normalise_name(value)
        if "*" in name or "?" in name:
            return Match(keyword, "wildcard", (name,))
        return Match(keyword, "equal", (name,))
    values = _string_values(value, keyword)
    if any("*" in v or "?" in v for v in values):
        if len(values) > 1 or vr not in _WILDCARD_VRS:
            raise MalformedRequest(f"{keyword}={value!r}: wildcards need a single value")
        return Match(keyword, "wildcard", (values[0],))
    if len(values) == 1:
        return Match(keyword, "equal", (values[0],))
    return Match(keyword, "any", tuple(values))


def _integer(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise MalformedRequest(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise MalformedRequest(f"{name}={value!r} must be at least {minimum}")
    return number


def parse_search(
    params: Iterable[tuple[str, str]],
    *,
    level: Level,
    study_uid: str | None = None,
    series_uid: str | None = None,
    default_limit: int,
    max_limit: int,
) -> Search:
    """Validate QIDO-RS query parameters into a :class:`Search` (400 on any error)."""
    limit, offset, fuzzy = default_limit, 0, False
    include: set[str] = set()
    include_all = False
    keys: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for name, value in params:
        if name == "limit":
            limit = min(_integer("limit", value, 1), max_limit)
        elif name == "offset":
            offset = _integer("offset", value, 0)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise MalformedRequest(f"fuzzymatching={value!r}: use true or false")
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for field in (f.strip() for f in value.split(",")):
                if field == "all":
                    include_all = True
                elif field:
                    include.add(_resolve(field, "includefield")[1])
        else:
            path = [_resolve(part, "search key") for part in name.split(".")]
            keyword, tag = path[0] if len(path) == 1 else (name, path[0][1])
            if keyword in seen:
                raise MalformedRequest(f"search key {keyword} is given more than once")
            seen.add(keyword)
            keys.append((keyword, tag, value))
    matches: list[Match] = []
    ignored: list[str] = []
    for keyword, tag, value in keys:
        attribute = BY_KEYWORD.get(keyword)
        include.add(tag)
        if attribute is None or not attribute.matchable or attribute.level > level:
            ignored.append(keyword)
            continue
        if value == "":
            continue  # universal matching: only asks for the attribute to be returned
        matches.append(_match(keyword, attribute.vr, value, fuzzy))
    query = Query(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=tuple(matches),
        limit=limit,
        offset=offset,
    )
    return Search(
        query=query, include=frozenset(include), include_all=include_all, ignored=tuple(ignored)
    )


def _level_defaults(level: Level) -> frozenset[str]:
    # SpecificCharacterSet, InstanceAvailability and RetrieveURL belong to every level.
    return frozenset(
        {a.tag for a in ATTRIBUTES if a.level == level and a.default}
        | {"00080005", "00080056", "00081190"}
    )


_DEFAULTS = {level: _level_defaults(level) for level in Level}


# Element values are passed through as raw JSON, never parsed: only the tags are read.
_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
#: Results shaped between two turns of the event loop (about half a millisecond).
SHAPE_BATCH = 64
_encoder = msgspec.json.Encoder()


class QidoService:
    """Answers searches from the index; framework-free."""

    def __init__(self, index: Index, *, store: str) -> None:
        self.index = index
        self.store = store

    def wanted(self, search: Search) -> set[str]:
        """Every tag a result of this search carries (when the data has it)."""
        query = search.query
        tags = set(_DEFAULTS[query.level]) | search.include
        if query.level >= Level.SERIES:
            tags.add("0020000D")
            if query.study_uid is None:
                tags |= _DEFAULTS[Level.STUDY]
        if query.level == Level.INSTANCE:
            tags.add("0020000E")
            if query.series_uid is None:
                tags |= _DEFAULTS[Level.SERIES]
        return tags

    async def search(self, search: Search, root: str) -> tuple[list[bytes], bool, str]:
        """DICOM JSON objects of one page of results, whether more exist, and what the
        index says about how it found them ("" or a sentence for a Warning header)."""
        page = await self.index.search(self.store, search.query)
        shape = _Shaper(search, self.wanted(search), root)
        results = []
        for number, hit in enumerate(page.hits, 1):
            results.append(shape(hit))
            if number % SHAPE_BATCH == 0:
                # A page of 1,000 studies takes milliseconds to shape: let the searches
                # queued behind it have their turn, or each waits for the whole page.
                await asyncio.sleep(0)
        return results, page.more, page.warning


_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


class _Shaper:
    """Turns the hits of one search into DICOM JSON objects; what to take from where is
    worked out once per search, not once per hit."""

    def __init__(self, search: Search, wanted: set[str], root: str) -> None:
        self.level = search.query.level
        self.include_all = search.include_all
        self.plain = sorted(wanted - _COMPUTED)
        computed = wanted & _COMPUTED
        if search.include_all:
            computed |= _DEFAULTS[self.level] & _COMPUTED
        self.computed = computed
        self.root = root

    def __call__(self, hit: SearchHit) -> bytes:
        # Deepest level first: an attribute is taken from the instance, else its series,
        # else its study. Only instance documents can hold bulk data, which QIDO-RS
        # does not return (ingest leaves it out of the study and series documents).
        docs = [_decoder.decode(doc) for doc in (hit.series, hit.study) if doc is not None]
        instance = _decoder.decode(hit.instance) if hit.instance is not None else None
        if instance is not None:
            instance = {t: e for t, e in instance.items() if b'"BulkDataURI"' not in bytes(e)}
            docs.insert(0, instance)
        tags: Iterable[str] = self.plain
        if self.include_all:
            tags = set(self.plain) | (docs[0].keys() - _COMPUTED)
        out: dict[str, Any] = {}
        if len(docs) == 1:
            only = docs[0]
            out = {tag: only[tag] for tag in tags if tag in only}
        else:
            for tag in tags:
                for doc in docs:
                    element = doc.get(tag)
                    if element is not None:
                        out[tag] = element
                        break
        computed = self.computed
        if "00080056" in computed:
            out["00080056"] = _ONLINE
        if "00081190" in computed:
            url = f"{self.root}/studies/{hit.study_uid}"
            if self.level >= Level.SERIES:
                url += f"/series/{hit.series_uid}"
            if self.level == Level.INSTANCE:
                url += f"/instances/{hit.sop_uid}"
            out["00081190"] = {"vr": "UR", "Value": [url]}
        if "00080061" in computed and hit.modalities:
            out["00080061"] = {"vr": "CS", "Value": list(hit.modalities)}
        if "00201206" in computed:
            out["00201206"] = {"vr": "IS", "Value": [hit.study_series]}
        if "00201208" in computed:
            out["00201208"] = {"vr": "IS", "Value": [hit.study_instances]}
        if "00201209" in computed:
            out["00201209"] = {"vr": "IS", "Value": [hit.series_instances]}
        return _encoder.encode({tag: out[tag] for tag in sorted(out)})
