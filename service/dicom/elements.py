"""Reading a header's top-level data elements (PS3.5 §7.1) straight from bytes.

:func:`read_elements` gives, for the common case, exactly what pydicom's
``read_dataset`` gives for the same bytes: one ``RawDataElement`` per element, the same
tag, VR, length, value, value offset and flags, in file order. It reads from an
in-memory ``bytes`` with ``struct.unpack_from`` rather than through pydicom's generator
and a file object, which does three calls and a yield per element.

The common case is little endian data whose elements all have a defined length and,
when explicit VR, a VR the standard defines. For anything else (an undefined-length
sequence or item, an explicit VR that is not a standard one, big endian data, an
element running past the end) it returns None and the caller lets pydicom read the
bytes: pydicom's rules for those cases stay the only ones.
"""

from __future__ import annotations

import struct
from typing import Final, cast

from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

__all__ = ["Elements", "read_elements"]

#: Elements by tag, as a pydicom ``Dataset`` keeps them (all raw here).
Elements = dict[BaseTag, DataElement | RawDataElement]

_EXPLICIT: Final = struct.Struct("<HH2sH").unpack_from
_IMPLICIT: Final = struct.Struct("<HHL").unpack_from
_LENGTH_32: Final = struct.Struct("<L").unpack_from
#: A standard VR's two bytes, and whether its length takes 4 bytes (PS3.5 §7.1.2).
_VRS: Final = {
    code: (code.decode("ascii"), code.decode("ascii") in EXPLICIT_VR_LENGTH_32)
    for code in (str(vr).encode("ascii") for vr in STANDARD_VR)
}
_UNDEFINED: Final = 0xFFFFFFFF
_SEQUENCE_DELIMITER: Final = 0xFFFEE00D
_CHARSET: Final = 0x00080005


def read_elements(
    data: bytes, start: int, end: int, *, implicit: bool, defer_size: int
) -> Elements | None:
    """The little endian elements in ``data[start:end]``, keyed by tag, or None when
    pydicom must read them (see the module docstring).

    As pydicom does with ``defer_size``, a value longer than ``defer_size`` (other than
    Specific Character Set) is not read: its ``value`` is None.
    """
    elements: Elements = {}
    i = start
    while i < end:
        if end - i < 8:
            return None
        if implicit:
            group, number, length = _IMPLICIT(data, i)
            vr = None
            i += 8
        else:
            group, number, code, length = _EXPLICIT(data, i)
            known = _VRS.get(code)
            if known is None:
                return None
            vr, long_length = known
            i += 8
            if long_length:
                if end - i < 4:
                    return None
                (length,) = _LENGTH_32(data, i)
                i += 4
        tag = group << 16 | number
        if length == _UNDEFINED or tag == _SEQUENCE_DELIMITER or i + length > end:
            return None
        if length > defer_size and tag != _CHARSET:
            value: bytes | None = None
        elif length:
            value = data[i : i + length]
        else:
            value = cast(bytes | None, empty_value_for_VR(vr, raw=True))
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, vr, length, value, i, implicit, True)
        i += length
    return elements
