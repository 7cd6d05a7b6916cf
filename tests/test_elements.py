"""read_elements gives what pydicom's read_dataset gives, or hands the bytes back to it."""

from __future__ import annotations

import io
import random
import struct
import warnings

import pytest
from pydicom.filereader import read_dataset

from service.dicom.elements import read_elements
from service.dicom.part10 import DEFER_SIZE, Part10Scanner, _charset
from tests.test_part10 import BROKEN, DEFLATED, dicom_files, read

EXPLICIT_BE = "1.2.840.10008.1.2.2"
IMPLICIT_LE = "1.2.840.10008.1.2"


def pydicom_elements(data: bytes, start: int, end: int, *, implicit: bool) -> list[tuple]:
    """What pydicom's reader makes of data[start:end], as comparable tuples."""
    window = io.BytesIO(data[:end])
    window.seek(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_dataset(window, implicit, True, defer_size=DEFER_SIZE)
    return [tuple(raw) for raw in ds.values()]


def ours(data: bytes, start: int, end: int, *, implicit: bool) -> list[tuple] | None:
    elements = read_elements(data, start, end, implicit=implicit, defer_size=DEFER_SIZE)
    if elements is None:
        return None
    assert all(key == raw.tag for key, raw in elements.items())
    return [tuple(raw) for raw in elements.values()]


def test_every_bundled_file_reads_as_pydicom_reads_it() -> None:
    """Over pydicom's bundled files: the File Meta and the header's data set."""
    read_here = 0
    for name in dicom_files():
        if name.rsplit("/", 1)[-1] in BROKEN:
            continue
        data = read(name)
        scanner = Part10Scanner()
        scanner.feed(data)
        try:
            result = scanner.finish()
        except Exception:
            continue  # refused by the scanner: never parsed
        meta = ours(data, 132, result.meta_end, implicit=False)
        assert meta == pydicom_elements(data, 132, result.meta_end, implicit=False), name
        ts = result.transfer_syntax
        if ts == EXPLICIT_BE or ts in DEFLATED:
            continue
        implicit = ts == IMPLICIT_LE
        found = ours(data, result.meta_end, result.header_end, implicit=implicit)
        if found is not None:
            read_here += 1
            expected = pydicom_elements(data, result.meta_end, result.header_end, implicit=implicit)
            assert found == expected, name
    # Most files have no undefined-length sequence before their pixel data.
    assert read_here >= 100


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    group, number = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"SQ", b"UN", b"UT", b"OW"):
        return struct.pack("<HH2s2xL", group, number, vr, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def test_values_offsets_and_deferral() -> None:
    data = (
        b"\0" * 10
        + element(0x00080005, b"CS", b"ISO_IR 100")
        + element(0x00100010, b"PN", b"")
        + element(0x00280010, b"US", b"")
        + element(0x00091010, b"OB", b"x" * (DEFER_SIZE + 2))
        + element(0x00081030, b"LO", b"Head ")
    )
    elements = read_elements(data, 10, len(data), implicit=False, defer_size=DEFER_SIZE)
    assert elements is not None
    assert [hex(t) for t in elements] == [
        "0x80005",
        "0x100010",
        "0x280010",
        "0x91010",
        "0x81030",
    ]
    assert elements[0x00080005].value == b"ISO_IR 100"
    assert elements[0x00080005].value_tell == 18
    assert elements[0x00100010].value == b""  # empty text is b"", as pydicom has it
    assert elements[0x00280010].value is None  # an empty number is None
    assert elements[0x00091010].value is None  # longer than defer_size: left unread
    assert elements[0x00091010].length == DEFER_SIZE + 2
    assert elements[0x00081030].value == b"Head "
    assert list(map(tuple, elements.values())) == pydicom_elements(
        data, 10, len(data), implicit=False
    )


@pytest.mark.parametrize(
    "data",
    [
        # an undefined-length sequence
        struct.pack("<HH2s2xL", 0x0008, 0x1140, b"SQ", 0xFFFFFFFF) + b"\xfe\xff\xdd\xe0\0\0\0\0",
        # a VR that is not two standard letters (pydicom may switch to implicit VR)
        struct.pack("<HH2sH", 0x0010, 0x0010, b"\x00\x01", 4) + b"ABCD",
        struct.pack("<HH2sH", 0x0010, 0x0010, b"XY", 4) + b"ABCD",
        # a value that runs past the end
        struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 8) + b"ABCD",
        # an element header cut short
        struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 4) + b"ABCD" + b"\x08\x00",
        # a sequence delimiter at the top level
        struct.pack("<HHL", 0xFFFE, 0xE0DD, 0),
    ],
    ids=["undefined-length", "binary-vr", "unknown-vr", "value-past-end", "short", "delimiter"],
)
def test_what_pydicom_decides_is_left_to_it(data: bytes) -> None:
    assert read_elements(data, 0, len(data), implicit=False, defer_size=DEFER_SIZE) is None


def test_implicit_vr() -> None:
    data = (
        struct.pack("<HHL", 0x0020, 0x000D, 4) + b"1.2\0" + struct.pack("<HHL", 0x0028, 0x0010, 2)
    )
    data += b"\x08\x00"
    elements = read_elements(data, 0, len(data), implicit=True, defer_size=DEFER_SIZE)
    assert elements is not None
    assert [(raw.VR, raw.value, raw.is_implicit_VR) for raw in elements.values()] == [
        (None, b"1.2\0", True),
        (None, b"\x08\x00", True),
    ]
    assert list(map(tuple, elements.values())) == pydicom_elements(
        data, 0, len(data), implicit=True
    )


LONG_VRS = (
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
)
SHORT_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT")
SHORT_VRS += (b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US")


def random_stream(rng: random.Random, *, implicit: bool) -> bytes:
    """Elements with random tags, VRs and lengths, now and then something pydicom must
    decide (a bad VR, an undefined length, a cut-off end)."""
    out = b""
    for _ in range(rng.randint(0, 12)):
        group = rng.choice((0x0008, 0x0010, 0x0011, 0x0020, 0x0028, 0x7FE0, 0xFFFE))
        number = rng.choice((0x0000, 0x0005, 0x0010, 0x1010, 0xE00D, rng.randrange(0x10000)))
        size = rng.choice((0, 1, 2, 4, 7, 64, DEFER_SIZE + 1))
        if rng.random() < 0.03:
            size = 0xFFFFFFFF
        value = bytes(rng.randrange(256) for _ in range(min(size, 80))) + b"\0" * max(
            0, min(size, DEFER_SIZE + 1) - 80
        )
        if implicit:
            out += struct.pack("<HHL", group, number, size) + value
            continue
        vr = rng.choice(LONG_VRS + SHORT_VRS + (b"XY", b"\x00\x01"))
        if vr in LONG_VRS:
            out += struct.pack("<HH2s2xL", group, number, vr, size) + value
        else:
            out += struct.pack("<HH2sH", group, number, vr, size & 0xFFFF) + value[: size & 0xFFFF]
    if out and rng.random() < 0.1:
        out = out[: rng.randrange(len(out))]
    return out


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_random_streams_read_as_pydicom_reads_them(implicit: bool) -> None:
    rng = random.Random(20261206)
    read_here = 0
    for _ in range(400):
        data = b"\0" * 6 + random_stream(rng, implicit=implicit)
        found = ours(data, 6, len(data), implicit=implicit)
        if found is None:
            continue
        read_here += 1
        try:
            expected = pydicom_elements(data, 6, len(data), implicit=implicit)
        except Exception as exc:
            # pydicom gives up on a Specific Character Set it cannot convert; so does
            # parse_header with the elements read here.
            elements = read_elements(data, 6, len(data), implicit=implicit, defer_size=DEFER_SIZE)
            assert elements is not None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(type(exc)):
                    _charset(elements)
            continue
        assert found == expected, data.hex()
    assert read_here >= 100
