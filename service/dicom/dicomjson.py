"""DICOM JSON (PS3.18 Annex F) of a stored instance, and the attributes the index keeps.

Promises of :func:`instance_json`:

* One JSON object, compact UTF-8, keys the 8-digit uppercase hex tags in ascending
  order, every element ``{"vr": ...}`` plus ``Value`` / ``InlineBinary`` /
  ``BulkDataURI`` (none of them when the element is empty). File Meta (group 0002),
  group lengths (gggg,0000) and Data Set Trailing Padding (FFFC,FFFC) are left out;
  private elements are kept.
* Binary values (OB OD OF OL OV OW UN) longer than ``inline_binary_max`` bytes become
  ``"BulkDataURI": "{+bulk}/bulkdata/<tag path>"``, where ``{+bulk}`` is
  :data:`BULK_PLACEHOLDER` (replaced by the instance's URL when served) and the tag
  path is the element's tag for a top-level element, or, inside sequences,
  ``SSSSSSSS/<item index>/TTTTTTTT`` with item indexes counted from 0, repeated per
  nesting level (``00540016/0/00181072/1/0009A001``). Shorter values are
  ``InlineBinary`` (base64 of the value in little endian byte order). The top-level
  pixel data is described by ``pixel`` and always a BulkDataURI named by its own tag
  (``.../bulkdata/7FE00010``; 7FE00008 / 7FE00009 for float pixel data).
* PN values are objects with only the non-empty ``Alphabetic`` / ``Ideographic`` /
  ``Phonetic`` groups; DS and IS are JSON numbers (a DS keeps its written digits), but a
  stored value that is not a valid number is kept as the JSON string it was, so a sloppy
  writer does not make the instance unstorable; FL/FD NaN and infinities, which JSON
  numbers cannot express, are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
  AT values are 8-digit hex strings. Text is decoded with Specific Character Set
  (inherited by sequence items). An empty value inside a multi-valued element is null.
* It never raises on a data set pydicom could parse: an element that cannot be
  converted (a US value of odd length, say) is written as ``UN`` with its bytes.

Values are converted from pydicom's raw (unconverted) elements where possible rather
than through pydicom's value classes: that is faster and avoids pydicom's validation
(which warns, or raises under stricter settings) on values we store as they are.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from array import array
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, private_dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from service.dicom.part10 import PixelDataLocation

__all__ = [
    "BULK_PLACEHOLDER",
    "INDEX_KEYWORDS",
    "element_text",
    "index_attributes",
    "instance_json",
    "instance_object",
]

#: Stands for the instance's base URL in stored JSON; substituted when served.
BULK_PLACEHOLDER: Final = "{+bulk}"

#: The attributes :func:`index_attributes` extracts, by keyword.
INDEX_KEYWORDS: Final = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "PatientID",
    "PatientName",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "TransferSyntaxUID",
    "SpecificCharacterSet",
    "InstitutionName",
    "BodyPartExamined",
)


def _keyword_tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


_INDEX_TAGS: Final = tuple((k, _keyword_tag(k)) for k in INDEX_KEYWORDS)
#: The data set's index attributes (not File Meta's) by tag.
_INDEX_KEYWORD: Final = {tag: k for k, tag in _INDEX_TAGS if tag >> 16 != 0x0002}

_DEFAULT_ENCODINGS: Final = ("iso8859",)  # pydicom's name for the default repertoire
_CHARSET_TAG: Final = 0x00080005
_PIXEL_REPRESENTATION_TAG: Final = 0x00280103
_EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"

_BINARY: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_SWAP: Final = {"OW": "H", "OF": "I", "OL": "I", "OD": "Q", "OV": "Q"}
_NUMERIC: Final = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
_FLOATS: Final = frozenset({"FL", "FD"})
_CHARSET_MULTI: Final = frozenset({"SH", "LO", "UC"})  # multi-valued, Specific Charset
_CHARSET_SINGLE: Final = frozenset({"ST", "LT", "UT"})  # one value, backslash is text
_ASCII: Final = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_KNOWN: Final = (
    _BINARY
    | set(_NUMERIC)
    | _CHARSET_MULTI
    | _CHARSET_SINGLE
    | _ASCII
    | {"AT", "DS", "IS", "PN", "SQ", "UR"}
)
# Control characters that end an ISO 2022 escape sequence's scope in text (PS3.5 §6.1.3).
_TEXT_DELIMS: Final = {0x0D, 0x0A, 0x09, 0x0C}
_UNDEFINED: Final = 0xFFFFFFFF

# A DS as PS3.5 allows it, and the subset that is already a JSON number.
_DS: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IS: Final = re.compile(r"[+-]?\d+")

_Json = dict[str, Any]


class _Ctx:
    """What an element's encoding depends on besides itself, per data set."""

    __slots__ = ("encodings", "little", "path", "pixel_rep")

    def __init__(self, encodings: Sequence[str], pixel_rep: int, little: bool, path: str) -> None:
        self.encodings = encodings
        self.pixel_rep = pixel_rep
        self.little = little
        self.path = path


# -- public API ----------------------------------------------------------------------


def instance_json(
    ds: Dataset, pixel: PixelDataLocation | None, *, inline_binary_max: int = 1024
) -> bytes:
    """The instance's DICOM JSON object without File Meta; see the module docstring."""
    return msgspec.json.encode(instance_object(ds, pixel, inline_binary_max=inline_binary_max))


def instance_object(
    ds: Dataset,
    pixel: PixelDataLocation | None,
    *,
    inline_binary_max: int = 1024,
    index: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What :func:`instance_json` encodes: element objects by tag, in tag order.

    Numbers whose digits are kept are ``msgspec.Raw``; encode with msgspec. Given an
    ``index`` dict, the same walk fills it with what :func:`index_attributes` returns
    (in tag order): ingest needs both, and a second walk cost a fifth of the first.
    """
    encoder = _Encoder(inline_binary_max)
    ctx = encoder.context(ds, _DEFAULT_ENCODINGS, 0, _little_endian(ds), "")
    skip = {pixel.tag} if pixel is not None else set()
    obj = encoder.dataset(ds, ctx, top=True, skip=skip, index=index)
    if index is not None:
        meta = getattr(ds, "file_meta", None)
        syntax = _index_text(meta, _TRANSFER_SYNTAX_TAG, _PLAIN_CTX) if meta is not None else ""
        if syntax:
            index["TransferSyntaxUID"] = syntax
    if pixel is not None:
        key = f"{pixel.tag:08X}"
        obj[key] = {"vr": pixel.vr, "BulkDataURI": f"{BULK_PLACEHOLDER}/bulkdata/{key}"}
        obj = dict(sorted(obj.items()))
    return obj


def index_attributes(ds: Dataset) -> dict[str, str]:
    """Top-level values of :data:`INDEX_KEYWORDS` as DICOM strings, when non-empty.

    Values are decoded text, each value trimmed of padding, multiple values joined by
    a backslash; a PN is its full ``Alphabetic=Ideographic=Phonetic`` string; binary
    numbers (Rows, ...) are decimal. TransferSyntaxUID comes from the File Meta. A PN
    loses empty trailing component groups (``Wang^XiaoDong=王^小東=`` is indexed as
    ``Wang^XiaoDong=王^小東``).
    """
    ctx = _Encoder.context(ds, _DEFAULT_ENCODINGS, 0, _little_endian(ds), "")
    meta = getattr(ds, "file_meta", None)
    # Most index keywords are absent from any one instance: look them up by plain int
    # rather than through pydicom's get_item, which makes a Tag of every key.
    present = {int(tag): elem for tag, elem in ds.items()}
    present_meta = {int(tag): elem for tag, elem in meta.items()} if meta is not None else {}
    found: dict[str, str] = {}
    for keyword, tag in _INDEX_TAGS:
        in_meta = tag >> 16 == 0x0002
        elem = (present_meta if in_meta else present).get(tag)
        if elem is None:
            continue
        source: Dataset = meta if in_meta and meta is not None else ds
        _index_into(found, keyword, source, elem, ctx)
    return found


def _index_into(found: dict[str, str], keyword: str, source: Dataset, elem: Any, ctx: _Ctx) -> None:
    try:
        text = _element_index_text(source, elem, ctx)
    except Exception:
        return  # an unreadable value is simply not indexed
    if text:
        found[keyword] = text


def element_text(ds: Dataset, tag: int) -> str:
    """A top-level element's value as :func:`index_attributes` gives it ("" when absent
    or empty), for UIDs, codes and numbers.

    Read from the element's bytes: pydicom's conversion (``ds.get``) took a sixth of
    the event loop's time on small instances, for the handful of values ingest checks.
    Text in a Specific Character Set is decoded as the default repertoire here.
    """
    return _index_text(ds, tag, _PLAIN_CTX)


# -- helpers shared by both ------------------------------------------------------------


_TRANSFER_SYNTAX_TAG: Final = 0x00020010
# For index text of single elements: a raw element carries its own byte order, so the
# context's is never read there; the default repertoire and Pixel Representation 0.
_PLAIN_CTX: Final = _Ctx(_DEFAULT_ENCODINGS, 0, True, "")


def _little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return True
    return _index_text(meta, _TRANSFER_SYNTAX_TAG, _PLAIN_CTX) != _EXPLICIT_VR_BE


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes | PersonName | int | float):
        return [value]
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _element_vr(ds: Dataset, raw: RawDataElement, ctx: _Ctx) -> tuple[str, bool]:
    """The VR to use for a raw element, and whether its value is little endian."""
    vr = raw.VR
    little = bool(raw.is_little_endian)
    if vr is None:  # implicit VR: the dictionaries decide
        vr = _dictionary_vr(ds, int(raw.tag))
    elif vr == "UN" and (raw.value is None or len(raw.value) < 0xFFFF):
        # An explicit UN for an attribute the dictionaries know, as pydicom reads it;
        # a UN value is implicit VR little endian (PS3.5 §6.2.2).
        known = _dictionary_vr(ds, int(raw.tag))
        if known != "UN" and " or " not in known:
            vr, little = known, True
    if " or " in vr:
        vr = _resolve_ambiguous(vr, ctx)
    elif vr not in _KNOWN:
        vr = "UN"
    return vr, little


def _dictionary_vr(ds: Dataset, tag: int) -> str:
    group, elem = tag >> 16, tag & 0xFFFF
    if elem == 0:
        return "UL"  # group length
    if not group & 1:
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return "UN"
    if 0x0010 <= elem <= 0x00FF:
        return "LO"  # a private creator
    if elem > 0x00FF:
        creator = _creator(ds, (group << 16) | (elem >> 8))
        if creator:
            try:
                return str(private_dictionary_VR(tag, creator))
            except KeyError:
                pass
    return "UN"


def _resolve_ambiguous(vr: str, ctx: _Ctx) -> str:
    # Only implicit VR data has ambiguous VRs; there OB/OW-type data is OW (PS3.5
    # §A.1), and US/SS follows Pixel Representation.
    if "OW" in vr:
        return "OW"
    return "SS" if ctx.pixel_rep == 1 else "US"


def _creator(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    return str(value).strip() if value else ""


def _decode(value: bytes, encodings: Sequence[str]) -> str:
    try:
        return str(decode_bytes(value, list(encodings), _TEXT_DELIMS))
    except Exception:
        # pydicom raises only under strict settings (or warnings turned into errors);
        # give what it gives otherwise: replacement characters.
        try:
            return value.decode(encodings[0], errors="replace")
        except LookupError:
            return value.decode("latin-1")


def _raw_numbers(vr: str, value: bytes, little: bool) -> tuple[Any, ...]:
    code = _NUMERIC[vr]
    count, odd = divmod(len(value), struct.calcsize("<" + code))
    if odd:
        raise ValueError(f"{vr} value of {len(value)} bytes")
    return struct.unpack(f"{'<' if little else '>'}{count}{code}", value)


def _raw_tags(value: bytes, little: bool) -> list[str]:
    count, odd = divmod(len(value), 4)
    if odd:
        raise ValueError(f"AT value of {len(value)} bytes")
    parts = struct.unpack(f"{'<' if little else '>'}{2 * count}H", value)
    return [f"{parts[k]:04X}{parts[k + 1]:04X}" for k in range(0, len(parts), 2)]


# -- the encoder -------------------------------------------------------------------------


class _Encoder:
    def __init__(self, inline_binary_max: int) -> None:
        self.inline_max = inline_binary_max

    @staticmethod
    def context(
        ds: Dataset, inherited: Sequence[str], pixel_rep: int, little: bool, path: str
    ) -> _Ctx:
        encodings = inherited
        charset = ds.get_item(_CHARSET_TAG, keep_deferred=True)
        if charset is not None and charset.value:
            value = charset.value
            if isinstance(value, bytes):
                names = [v.strip(" \0") for v in value.decode("latin-1").split("\\")]
            else:
                names = [str(v).strip() for v in _as_list(value)]
            try:
                encodings = convert_encodings(names)
            except Exception:
                encodings = _DEFAULT_ENCODINGS
        rep = ds.get_item(_PIXEL_REPRESENTATION_TAG, keep_deferred=True)
        if rep is not None and rep.value is not None:
            value = rep.value
            if isinstance(rep, RawDataElement) and isinstance(value, bytes) and len(value) >= 2:
                pixel_rep = struct.unpack("<H" if rep.is_little_endian else ">H", value[:2])[0]
            elif isinstance(value, int):
                pixel_rep = value
        return _Ctx(encodings, pixel_rep, little, path)

    def dataset(
        self,
        ds: Dataset,
        ctx: _Ctx,
        *,
        top: bool = False,
        skip: set[int] | None = None,
        index: dict[str, str] | None = None,
    ) -> _Json:
        out: _Json = {}
        # Elements as stored (raw ones stay raw), sorted by plain int: sorting Tags, and
        # get_item per key, compare and convert in Python.
        for tag, elem in sorted((int(key), elem) for key, elem in ds.items()):
            if tag & 0xFFFF == 0 or tag == 0xFFFCFFFC or (top and tag >> 16 == 0x0002):
                continue
            if skip and tag in skip:
                continue
            if index is not None and tag in _INDEX_KEYWORD:
                _index_into(index, _INDEX_KEYWORD[tag], ds, elem, ctx)
            try:
                if isinstance(elem, RawDataElement):
                    out[f"{tag:08X}"] = self.raw(ds, elem, ctx)
                else:
                    out[f"{tag:08X}"] = self.converted(elem, ctx)
            except Exception:
                out[f"{tag:08X}"] = self.fallback(elem, tag, ctx)
        return out

    # -- raw elements ------------------------------------------------------------------

    def raw(self, ds: Dataset, raw: RawDataElement, ctx: _Ctx) -> _Json:
        vr, little = _element_vr(ds, raw, ctx)
        tag = int(raw.tag)
        value = raw.value
        if vr == "SQ":
            try:
                return self.converted(ds[tag], ctx)  # pydicom parses the items
            except Exception:
                if raw.VR == "UN" and value:
                    return self.binary("UN", value, True, tag, ctx)
                raise
        if value is None:
            if not raw.length or raw.length == _UNDEFINED:
                return {"vr": vr}
            # A deferred value (parse_header's defer_size): large binary needs no
            # reading; anything else is read through the dataset's buffer.
            if vr in _BINARY and raw.length > self.inline_max:
                return self.bulk(vr, tag, ctx)
            try:
                return self.converted(ds[tag], ctx)
            except Exception:
                return self.bulk(vr, tag, ctx) if vr in _BINARY else {"vr": vr}
        if not value:
            return {"vr": vr}
        if vr in _ASCII and b"\\" not in value:
            # One value of a plain ASCII VR (a UID, a code, a date): the commonest case.
            text = value.decode("latin-1").strip("\0 ")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr in _BINARY:
            return self.binary(vr, value, little, tag, ctx)
        if vr == "PN":
            text = _decode(value.rstrip(b"\0 "), ctx.encodings)
            return _with_values(vr, [_person_name(v) for v in text.split("\\")])
        if vr in _CHARSET_MULTI:
            text = _decode(value, ctx.encodings)
            return _with_values(vr, [v.rstrip("\0 ") or None for v in text.split("\\")])
        if vr in _CHARSET_SINGLE:
            text = _decode(value, ctx.encodings).rstrip("\0 ")
            return _with_values(vr, [text or None])
        if vr in _NUMERIC:
            numbers = _raw_numbers(vr, value, little)
            if vr in _FLOATS:
                return _with_values(vr, [_float(v) for v in numbers])
            return _with_values(vr, list(numbers))
        if vr == "AT":
            return _with_values(vr, list(_raw_tags(value, little)))
        text = value.decode("latin-1")
        if vr == "UR":
            return _with_values(vr, [text.strip("\0 ") or None])
        parts = [v.strip("\0 ") for v in text.split("\\")]
        if vr == "DS":
            return _with_values(vr, [_ds_value(v) for v in parts])
        if vr == "IS":
            return _with_values(vr, [_is_value(v) for v in parts])
        return _with_values(vr, [v or None for v in parts])

    # -- converted elements (accessed before, sequences, deferred reads) ---------------

    def converted(self, elem: DataElement, ctx: _Ctx) -> _Json:
        vr = str(elem.VR)
        tag = int(elem.tag)
        value = elem.value
        if " or " in vr:
            vr = "OW" if isinstance(value, bytes) and "OW" in vr else _resolve_ambiguous(vr, ctx)
        elif vr not in _KNOWN:
            vr = "UN"
        if vr == "SQ":
            items = []
            for index, item in enumerate(value or ()):
                sub = self.context(
                    item, ctx.encodings, ctx.pixel_rep, ctx.little, f"{ctx.path}{tag:08X}/{index}/"
                )
                items.append(self.dataset(item, sub))
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        if value is None or (isinstance(value, str | bytes | MultiValue | list) and not value):
            return {"vr": vr}
        if vr in _BINARY:
            if not isinstance(value, bytes | bytearray):
                raise TypeError(f"{vr} value is {type(value).__name__}")
            return self.binary(vr, bytes(value), ctx.little, tag, ctx)
        values = _as_list(value)
        if vr == "PN":
            return _with_values(vr, [_person_name(str(v)) for v in values])
        if vr == "DS":
            return _with_values(vr, [_ds_value(str(v).strip()) for v in values])
        if vr == "IS":
            return _with_values(vr, [_is_value(str(v).strip()) for v in values])
        if vr == "AT":
            return _with_values(vr, [f"{int(v):08X}" for v in values])
        if vr in _FLOATS:
            return _with_values(vr, [_float(float(v)) for v in values])
        if vr in _NUMERIC:
            return _with_values(vr, [int(v) for v in values])
        if any(isinstance(v, bytes) for v in values):
            raise TypeError(f"{vr} value is bytes")
        if vr in _ASCII or vr == "UR":
            return _with_values(vr, [str(v).strip("\0 ") or None for v in values])
        return _with_values(vr, [str(v).rstrip("\0 ") or None for v in values])

    # -- binary and fallback -----------------------------------------------------------

    def bulk(self, vr: str, tag: int, ctx: _Ctx) -> _Json:
        return {"vr": vr, "BulkDataURI": f"{BULK_PLACEHOLDER}/bulkdata/{ctx.path}{tag:08X}"}

    def binary(self, vr: str, value: bytes, little: bool, tag: int, ctx: _Ctx) -> _Json:
        if len(value) > self.inline_max:
            return self.bulk(vr, tag, ctx)
        code = _SWAP.get(vr)
        if code is not None and not little:
            words = array(code)
            whole = len(value) - len(value) % words.itemsize
            words.frombytes(value[:whole])
            words.byteswap()
            value = words.tobytes() + value[whole:]
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}

    def fallback(self, elem: RawDataElement | DataElement | None, tag: int, ctx: _Ctx) -> _Json:
        """An element that cannot be converted: its bytes as UN, or empty."""
        value = getattr(elem, "value", None)
        if isinstance(value, bytes | bytearray) and value:
            return self.binary("UN", bytes(value), True, tag, ctx)
        vr = getattr(elem, "VR", None) or "UN"
        return {"vr": vr if vr in _KNOWN else "UN"}


def _with_values(vr: str, values: list[Any]) -> _Json:
    if values.count(None) == len(values):  # all empty (no value compares equal to None)
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _person_name(text: str) -> dict[str, str] | None:
    groups = text.rstrip("\0 ").split("=")
    pn = {
        name: group.rstrip(" ")
        for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)
        if group.rstrip(" ")
    }
    return pn or None


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _ds_value(text: str) -> msgspec.Raw | float | str | None:
    """A DS as a JSON number; its digits kept when they already are one."""
    if not text:
        return None
    if _DS.fullmatch(text) is None:
        return text
    number = float(text)
    if not math.isfinite(number):
        return text
    if _JSON_NUMBER.fullmatch(text):
        return msgspec.Raw(text.encode("ascii"))
    return number


def _is_value(text: str) -> msgspec.Raw | str | None:
    if not text:
        return None
    if _IS.fullmatch(text) is None:
        return text
    return msgspec.Raw(str(int(text)).encode("ascii"))


# -- index ---------------------------------------------------------------------------------


def _index_text(source: Dataset, tag: int, ctx: _Ctx) -> str:
    elem = source.get_item(tag, keep_deferred=True)
    return "" if elem is None else _element_index_text(source, elem, ctx)


def _element_index_text(source: Dataset, elem: DataElement | RawDataElement, ctx: _Ctx) -> str:
    if isinstance(elem, RawDataElement):
        value = elem.value
        if not value:
            return ""  # empty, or deferred (far too long to index)
        vr, little = _element_vr(source, elem, ctx)
        if vr in _NUMERIC:
            return "\\".join(str(v) for v in _raw_numbers(vr, value, little))
        if vr in _BINARY or vr == "SQ":
            return ""
        if vr == "PN" or vr in _CHARSET_MULTI or vr in _CHARSET_SINGLE:
            text = _decode(value, ctx.encodings)
        else:
            text = value.decode("latin-1")
        if vr == "PN":
            return text.rstrip("\0 =")  # drop empty trailing component groups
        if vr in _CHARSET_SINGLE:
            return text.rstrip("\0 ")
        if "\\" not in text:
            return text.strip("\0 ")
        parts = [v.strip("\0 ") for v in text.split("\\")]
        return "\\".join(parts) if any(parts) else ""
    value = elem.value
    if value is None or isinstance(value, bytes | Dataset) or elem.VR == "SQ":
        return ""
    parts = [str(v).strip() for v in _as_list(value)]
    return "\\".join(parts) if any(parts) else ""
