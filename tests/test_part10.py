"""Part10Scanner and parse_header against pydicom's bundled files and synthetic streams."""

from __future__ import annotations

import io
import os
import random
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO

import pytest
from pydicom import dcmread, encaps
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.misc import is_dicom
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from service.dicom.part10 import Part10Scanner, PixelDataLocation, ScanResult, parse_header
from service.dicom.reasons import CANNOT_UNDERSTAND
from service.errors import InstanceRejected

DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"}
# pydicom reads these (with warnings); they are broken and must be refused.
BROKEN = {
    "MR_truncated.dcm": "truncated: Pixel Data",
    "rtplan_truncated.dcm": "truncated: value of (300A,00B0)",
    "meta_missing_tsyntax.dcm": "no (0002,0010) Transfer Syntax UID",
}


def _data_root() -> str:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return str(Path(path).parent.parent)


@cache
def dicom_files() -> tuple[str, ...]:
    """Every bundled file pydicom reads as Part 10 (preamble + DICM, force=False)."""
    found = []
    for path in sorted(get_testdata_files() + get_charset_files()):
        if not os.path.isfile(path) or not is_dicom(path):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
        found.append(os.path.relpath(path, _data_root()))
    return tuple(found)


def read(name: str) -> bytes:
    return Path(_data_root(), name).read_bytes()


def scan(data: bytes, chunk: int | None = None) -> ScanResult:
    scanner = Part10Scanner()
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        scanner.feed(data[start : start + step])
    return scanner.finish()


def rejected(data: bytes, chunk: int | None = None) -> str:
    with pytest.raises(InstanceRejected) as info:
        scan(data, chunk)
    assert info.value.reason == CANNOT_UNDERSTAND
    return info.value.message


@cache
def oracle(name: str) -> tuple[Dataset, int, Dataset]:
    """pydicom's header (and where its reading stopped), and the full dataset."""
    path = os.path.join(_data_root(), name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(path, "rb") as fp:
            header = dcmread(fp, stop_before_pixels=True)
            # dcmread rewinds to the start of the pixel data element when it stops.
            stop = fp.tell()
        full = dcmread(path)
    return header, stop, full


def test_the_corpus_covers_the_interesting_encodings() -> None:
    syntaxes = set()
    for name in dicom_files():
        header, _, _ = oracle(name)
        syntaxes.add(str(header.file_meta.get("TransferSyntaxUID", "")))
    assert len(dicom_files()) > 150
    for ts in (
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.5",  # RLE
    ):
        assert ts in syntaxes


@pytest.mark.parametrize("chunk", [1, 7, 4096, None])
@pytest.mark.parametrize("name", dicom_files())
def test_scanner_agrees_with_pydicom(name: str, chunk: int | None) -> None:
    data = read(name)
    base = os.path.basename(name)
    if base in BROKEN:
        assert BROKEN[base] in rejected(data, chunk)
        return
    header, stop, full = oracle(name)
    result = scan(data, chunk)
    assert result.size == len(data)
    assert result.transfer_syntax == header.file_meta.TransferSyntaxUID
    meta = header.file_meta
    assert result.sop_instance_uid == (meta.get("MediaStorageSOPInstanceUID") or None)
    assert result.sop_class_uid == (meta.get("MediaStorageSOPClassUID") or None)
    if result.transfer_syntax in DEFLATED:
        assert result.header_end == len(data)
        assert result.pixel_data is None
        return
    assert result.header_end == stop
    pixel_tags = [t for t in (0x7FE00008, 0x7FE00009, 0x7FE00010) if t in full]
    if not pixel_tags:
        assert result.pixel_data is None
        assert result.header_end == len(data)
        return
    pixel = result.pixel_data
    assert pixel is not None
    assert pixel.tag == pixel_tags[0]
    assert pixel.element_offset == stop
    raw = full.get_item(pixel.tag)
    assert isinstance(raw, RawDataElement)
    assert pixel.value_offset == raw.value_tell
    if raw.length != 0xFFFFFFFF:
        assert pixel.length == raw.length
        assert pixel.fragments == ()
        assert data[pixel.value_offset : pixel.value_offset + raw.length] == raw.value
        return
    assert pixel.length is None
    assert pixel.vr == "OB" or raw.VR is None or pixel.vr == raw.VR
    value = raw.value
    assert value is not None
    assert list(pixel.basic_offset_table) == encaps.parse_basic_offsets(value)
    bot_length = struct.unpack_from("<L", value, 4)[0]
    fragments = list(encaps.generate_fragments(value[8 + bot_length :]))
    assert [data[o : o + n] for o, n in pixel.fragments] == fragments


def test_header_end_is_known_before_the_pixel_value_arrives() -> None:
    data = read("test_files/CT_small.dcm")
    _, stop, _ = oracle("test_files/CT_small.dcm")
    scanner = Part10Scanner()
    for offset in range(0, stop + 12):
        assert scanner.header_end is None
        scanner.feed(data[offset : offset + 1])
    # The whole Pixel Data element header (12 bytes, explicit OW) has been seen.
    assert scanner.header_end == stop
    assert scanner.transfer_syntax == ExplicitVRLittleEndian
    scanner.feed(data[stop + 12 :])
    assert scanner.finish().header_end == stop


def test_deflated_header_end_waits_for_finish() -> None:
    data = read("test_files/image_dfl.dcm")
    scanner = Part10Scanner()
    scanner.feed(data[:-1])
    assert scanner.header_end is None
    scanner.feed(data[-1:])
    assert scanner.header_end is None
    assert scanner.finish().header_end == len(data)
    assert scanner.header_end == len(data)


# -- synthetic streams -------------------------------------------------------------------


def part10(
    ds: Dataset, ts: str = ExplicitVRLittleEndian, *, tail: bytes = b"", pixel: bytes = b""
) -> bytes:
    """ds written as Part 10 with transfer syntax ts, then raw ``pixel`` and ``tail``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue() + pixel + tail


def small_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "Doe^John"
    ds.Rows = 2
    ds.Columns = 2
    return ds


def explicit(tag: int, vr: bytes, value: bytes, *, big: bool = False) -> bytes:
    e = ">" if big else "<"
    if vr in (b"OB", b"OW", b"OF", b"OD", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OL", b"OV"):
        return struct.pack(f"{e}HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack(f"{e}HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def undefined(tag: int, vr: bytes | None, *, big: bool = False) -> bytes:
    e = ">" if big else "<"
    if vr is None:
        return struct.pack(f"{e}HHL", tag >> 16, tag & 0xFFFF, 0xFFFFFFFF)
    return struct.pack(f"{e}HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, 0xFFFFFFFF)


def item(value: bytes | None, *, big: bool = False) -> bytes:
    """An item with defined length (value) or the header of an undefined-length one."""
    e = ">" if big else "<"
    if value is None:
        return struct.pack(f"{e}HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    return struct.pack(f"{e}HHL", 0xFFFE, 0xE000, len(value)) + value


def item_end(big: bool = False) -> bytes:
    return struct.pack(">HHL" if big else "<HHL", 0xFFFE, 0xE00D, 0)


def seq_end(big: bool = False) -> bytes:
    return struct.pack(">HHL" if big else "<HHL", 0xFFFE, 0xE0DD, 0)


def encapsulated(fragments: list[bytes], bot: list[int], tag: int = 0x7FE00010) -> bytes:
    parts = [undefined(tag, b"OB"), item(struct.pack(f"<{len(bot)}L", *bot))]
    parts += [item(fragment) for fragment in fragments]
    return b"".join([*parts, seq_end()])


def test_encapsulated_fragments_and_offset_table() -> None:
    fragments = [b"\x01" * 10, b"\x02" * 3, b"", b"\x03" * 8]  # odd and empty ones too
    pixel = encapsulated(fragments, [0, 18, 30])
    padding = explicit(0xFFFCFFFC, b"OB", b"\0" * 6)
    data = part10(small_dataset(), JPEGBaseline8Bit, pixel=pixel, tail=padding)
    start = data.index(pixel)
    for chunk in (1, 3, 5, 64, None):
        result = scan(data, chunk)
        loc = result.pixel_data
        assert loc is not None
        assert (loc.tag, loc.vr, loc.length) == (0x7FE00010, "OB", None)
        assert (loc.element_offset, loc.value_offset) == (start, start + 12)
        assert result.header_end == start
        assert loc.basic_offset_table == (0, 18, 30)
        assert [data[o : o + n] for o, n in loc.fragments] == fragments
        assert result.size == len(data)


def test_pixel_location_round_trips_through_msgspec() -> None:
    import msgspec

    loc = PixelDataLocation(
        tag=0x7FE00010,
        vr="OB",
        element_offset=1,
        value_offset=13,
        length=None,
        fragments=((21, 4),),
        basic_offset_table=(0,),
    )
    encoded = msgspec.json.encode(loc)
    assert msgspec.json.decode(encoded, type=PixelDataLocation) == loc


def test_nested_undefined_length_sequences_with_icon_pixel_data() -> None:
    # (0088,0200) Icon Image Sequence, undefined length, holding an undefined-length
    # item with encapsulated pixel data; then a sequence nested two deep; then a UN
    # sequence with implicit VR content; then the real pixel data.
    icon = explicit(0x00280010, b"US", b"\x02\x00") + encapsulated([b"icon-frame"], []) + item_end()
    inner_implicit = struct.pack("<HHL", 0x0008, 0x0100, 4) + b"ABCD"
    body = (
        undefined(0x00880200, b"SQ")
        + item(None)
        + icon
        + seq_end()
        + undefined(0x00400275, b"SQ")
        + item(None)
        + undefined(0x00400008, b"SQ")
        + item(explicit(0x00080100, b"SH", b"CODE"))  # defined-length item
        + item(None)
        + explicit(0x00080100, b"SH", b"X1")
        + item_end()
        + seq_end()
        + item_end()
        + seq_end()
        + undefined(0x00091010, b"UN")
        + item(None)
        + inner_implicit
        + item_end()
        + seq_end()
    )
    pixel = explicit(0x7FE00010, b"OW", b"\0" * 8)
    data = part10(Dataset(), ExplicitVRLittleEndian, pixel=body + pixel)
    for chunk in (1, 2, 13, None):
        result = scan(data, chunk)
        assert result.header_end == len(data) - len(pixel)
        assert result.pixel_data is not None
        assert result.pixel_data.length == 8
    # pydicom reads the same structure.
    ds = parse_header(data, len(data) - len(pixel))
    assert ds.IconImageSequence[0].Rows == 2
    assert ds.RequestAttributesSequence[0].ScheduledProtocolCodeSequence[1].CodeValue == "X1"


def test_implicit_vr_sequences_and_float_pixel_data() -> None:
    seq = Dataset()
    seq.CodeValue = "1"
    ds = small_dataset()
    ds.ReferencedImageSequence = Sequence([seq])
    ds.ReferencedImageSequence.is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    pixel = struct.pack("<HHL", 0x7FE0, 0x0008, 16) + b"\0" * 16
    data = part10(ds, ImplicitVRLittleEndian, pixel=pixel)
    result = scan(data, 5)
    assert result.pixel_data is not None
    assert (result.pixel_data.tag, result.pixel_data.vr) == (0x7FE00008, "OF")
    assert result.header_end == len(data) - len(pixel)
    assert result.pixel_data.value_offset == len(data) - 16


def test_big_endian_undefined_length_sequence() -> None:
    body = (
        undefined(0x00081140, b"SQ", big=True)
        + item(None, big=True)
        + explicit(0x00081150, b"UI", b"1.2\0", big=True)
        + item_end(big=True)
        + seq_end(big=True)
    )
    pixel = explicit(0x7FE00010, b"OW", b"\0\1" * 4, big=True)
    data = part10(Dataset(), ExplicitVRBigEndian, pixel=body + pixel)
    result = scan(data, 3)
    assert result.pixel_data is not None
    assert result.pixel_data.element_offset == len(data) - len(pixel)
    assert result.pixel_data.length == 8


def test_odd_lengths_are_tolerated() -> None:
    body = explicit(0x00100010, b"PN", b"Odd") + explicit(0x00091001, b"OB", b"\1\2\3")
    data = part10(Dataset(), ExplicitVRLittleEndian, pixel=body)
    assert scan(data, 1).header_end == len(data)


def test_implicit_elements_inside_explicit_data_like_pydicom() -> None:
    # An explicit VR data set whose first item element is implicit VR (a writer bug
    # pydicom tolerates): the item is read as implicit VR.
    body = (
        undefined(0x00081140, b"SQ")
        + item(None)
        + struct.pack("<HHL", 0x0008, 0x1150, 4)
        + b"1.2\0"
        + item_end()
        + seq_end()
    )
    data = part10(Dataset(), ExplicitVRLittleEndian, pixel=body)
    assert scan(data, 1).header_end == len(data)
    assert parse_header(data, len(data)).ReferencedImageSequence[0][0x00081150].value == "1.2"


# -- errors ------------------------------------------------------------------------------


def test_garbage_is_not_part10() -> None:
    rng = random.Random(7)
    for size in (0, 10, 131, 132, 200, 5000):
        garbage = bytes(rng.randrange(256) for _ in range(size))
        message = rejected(garbage)
        assert "not a DICOM Part 10 file" in message


def test_missing_preamble_is_rejected_early() -> None:
    data = read("test_files/CT_small.dcm")[128:]  # "DICM" at offset 0
    scanner = Part10Scanner()
    with pytest.raises(InstanceRejected, match="not a DICOM Part 10 file"):
        scanner.feed(data[:4096])
    # The failure is sticky.
    with pytest.raises(InstanceRejected):
        scanner.feed(b"more")
    with pytest.raises(InstanceRejected):
        scanner.finish()
    with open(get_testdata_file("no_meta.dcm") or "", "rb") as fp:
        assert "not a DICOM Part 10 file" in rejected(fp.read())


def test_meta_problems() -> None:
    data = read("test_files/CT_small.dcm")
    # No File Meta elements after DICM at all.
    no_meta = data[:132] + explicit(0x00080016, b"UI", b"1.2\0")
    assert "no File Meta Information" in rejected(no_meta)
    # File Meta written in implicit VR.
    implicit_meta = data[:132] + struct.pack("<HHL", 0x0002, 0x0010, 4) + b"1.2\0"
    assert "not explicit VR little endian" in rejected(implicit_meta)
    # An impossible UID length in File Meta is refused before it is buffered.
    huge = data[:132] + struct.pack("<HH2sH", 2, 0x10, b"UI", 0xFFF0)
    scanner = Part10Scanner()
    with pytest.raises(InstanceRejected, match="impossible length"):
        scanner.feed(huge)


def test_feed_after_finish_is_a_programming_error() -> None:
    scanner = Part10Scanner()
    scanner.feed(read("test_files/CT_small.dcm"))
    first = scanner.finish()
    assert scanner.finish() is first
    with pytest.raises(RuntimeError):
        scanner.feed(b"x")


@pytest.mark.parametrize(
    "name",
    [
        "test_files/MR_small_implicit.dcm",
        "test_files/MR_small_bigendian.dcm",
        "test_files/JPEG2000.dcm",
        "test_files/SC_rgb_rle_2frame.dcm",
        "test_files/rtplan.dcm",
        "test_files/image_dfl.dcm",
        "test_files/UN_sequence.dcm",
        "test_files/nested_priv_SQ.dcm",
    ],
)
def test_truncation_at_every_position(name: str) -> None:
    """Cut anywhere: refused, unless the cut is an element boundary of the data set."""
    data = read(name)
    header, _, full = oracle(name)
    result = scan(data)
    if str(header.file_meta.TransferSyntaxUID) in DEFLATED:
        # Bytes after the end of the deflate stream are ignored.
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflater.decompress(data[result.meta_end :])
        starts = set(range(len(data) - len(inflater.unused_data), len(data)))
    else:
        starts = element_starts(full) - {result.meta_end}
    positions = range(len(data)) if len(data) < 12000 else range(0, len(data), 7)
    for cut in positions:
        error = outcome(data[:cut])
        if error is None:
            assert cut in starts, f"accepted a cut at {cut} that is not an element boundary"
            continue
        assert error.reason == CANNOT_UNDERSTAND
        if cut < 132:
            assert "not a DICOM Part 10 file" in error.message
        else:
            assert "truncated" in error.message or "Transfer Syntax" in error.message, cut
        assert cut not in starts, (cut, error.message)


def outcome(data: bytes, chunk: int | None = None) -> InstanceRejected | None:
    """None when ``data`` scans, else the rejection."""
    try:
        scan(data, chunk)
    except InstanceRejected as exc:
        return exc
    return None


def element_starts(full: Dataset) -> set[int]:
    """Offsets of the top-level elements of the data set (and of the end), by pydicom."""
    starts = set()
    implicit = full.original_encoding[0]
    for elem in full.values():
        if isinstance(elem, RawDataElement):
            header = 8 if elem.is_implicit_VR or elem.VR not in LONG else 12
            starts.add(elem.value_tell - header)
        else:  # converted already: undefined-length sequences, Specific Character Set
            starts.add(elem.file_tell - (8 if implicit or elem.VR not in LONG else 12))
    return starts


LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}


def test_truncated_pixel_data_messages() -> None:
    data = read("test_files/CT_small.dcm")
    _, stop, _ = oracle("test_files/CT_small.dcm")
    message = rejected(data[: stop + 100], 4096)
    assert message.startswith("truncated: Pixel Data of (7FE0,0010)")
    _, _, full = oracle("test_files/CT_small.dcm")
    assert f"at offset {stop + 12} expected {len(full.PixelData)} bytes, got 88" in message
    assert "truncated: the stream ends inside an element header" in rejected(data[: stop + 5])

    fragments = [b"\x01" * 100, b"\x02" * 50]
    pixel = encapsulated(fragments, [0])
    jpeg = part10(small_dataset(), JPEGBaseline8Bit, pixel=pixel)
    assert "Pixel Data fragment 2" in rejected(jpeg[:-30])
    assert "not terminated by a Sequence Delimitation Item" in rejected(jpeg[:-8])
    assert "truncated: Basic Offset Table" in rejected(jpeg[: len(jpeg) - len(pixel) + 22])


def test_truncated_values_name_their_element() -> None:
    # The element is named only when a value turns out cut short (see _skip_value).
    seq = undefined(0x00081140, b"SQ") + item(explicit(0x00081150, b"UI", b"1.2.3.4"))
    message = rejected(part10(small_dataset(), tail=seq)[:-3])
    assert message.startswith("truncated: item of sequence (0008,1140) at offset")
    full = part10(small_dataset())
    at = full.index(b"\x02\x00\x12\x00UI")  # Implementation Class UID, in the File Meta
    message = rejected(full[: at + 10])
    assert message.startswith("truncated: value of File Meta element (0002,0012) at offset")
    assert rejected(full[:-2]).startswith("truncated: value of (0028,0011)")  # Columns


def test_structural_errors() -> None:
    # Something other than an item inside encapsulated pixel data.
    bad = undefined(0x7FE00010, b"OB") + item(b"") + explicit(0x00080016, b"UI", b"12")
    message = rejected(part10(small_dataset(), JPEGBaseline8Bit, pixel=bad))
    assert "expected an Item (FFFE,E000)" in message
    assert "encapsulated Pixel Data" in message
    # A fragment of undefined length.
    bad = undefined(0x7FE00010, b"OB") + item(b"") + item(None)
    assert "undefined length" in rejected(part10(small_dataset(), JPEGBaseline8Bit, pixel=bad))
    # Delimiters where no item or sequence is open.
    assert "unexpected (FFFE,E00D)" in rejected(part10(small_dataset(), tail=item_end()))
    assert "unexpected (FFFE,E0DD)" in rejected(part10(small_dataset(), tail=seq_end()))
    assert "unexpected (FFFE,E000)" in rejected(part10(small_dataset(), tail=item(b"")))
    # An item never closed.
    open_item = undefined(0x00081140, b"SQ") + item(None) + explicit(0x00081150, b"UI", b"12")
    assert "not terminated by an Item Delimitation Item" in rejected(
        part10(small_dataset(), tail=open_item)
    )
    # A Basic Offset Table whose length is not a multiple of 4.
    bad = undefined(0x7FE00010, b"OB") + item(b"\0" * 6) + seq_end()
    assert "not a multiple of 4" in rejected(part10(small_dataset(), JPEGBaseline8Bit, pixel=bad))


def test_corrupt_deflate_stream() -> None:
    data = read("test_files/image_dfl.dcm")
    meta_end = scan(data).meta_end
    corrupt = data[:meta_end] + b"\xff" * 64
    assert "deflated data set is corrupt" in rejected(corrupt)
    # A well-formed deflate stream of a broken data set.
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    payload = deflater.compress(explicit(0x00100010, b"PN", b"AB") + b"\x08\x00") + deflater.flush()
    message = rejected(data[:meta_end] + payload)
    assert message.startswith("in the inflated data set: truncated")


def test_header_fuzz_only_ever_scans_or_rejects() -> None:
    """Random byte flips in headers: a ScanResult or InstanceRejected, nothing else."""
    rng = random.Random(20240601)
    outcomes = {"accepted": 0, "rejected": 0}
    for name in (
        "test_files/CT_small.dcm",
        "test_files/MR_small_implicit.dcm",
        "test_files/MR_small_bigendian.dcm",
        "test_files/JPEG2000.dcm",
        "test_files/rtplan.dcm",
        "test_files/image_dfl.dcm",
        "test_files/UN_sequence.dcm",
        "test_files/SC_rgb_rle_2frame.dcm",
    ):
        data = read(name)
        header_end = scan(data).header_end
        for _ in range(250):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(128, header_end)] = rng.randrange(256)
            error = outcome(bytes(mutated), rng.choice([1, 61, 4096, None]))
            if error is None:
                outcomes["accepted"] += 1
            else:
                assert error.reason == CANNOT_UNDERSTAND
                assert error.message
                outcomes["rejected"] += 1
    assert outcomes["accepted"] > 100
    assert outcomes["rejected"] > 100


# -- size and speed -------------------------------------------------------------------


def native_stream(size: int, *, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A Part 10 file with ``size`` bytes of native pixel data, generated on the fly."""
    ds = small_dataset()
    ds.NumberOfFrames = max(1, size // (512 * 512 * 2))
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = 16
    header = part10(ds, ExplicitVRLittleEndian)
    yield header + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, size)
    block = bytes(chunk)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield block if n == chunk else block[:n]
        sent += n
    yield explicit(0xFFFCFFFC, b"OB", b"\0" * 4)


def test_two_gigabytes_of_native_pixel_data_scan_in_negligible_time() -> None:
    size = 2 * 1024**3
    scanner = Part10Scanner()
    started = time.perf_counter()
    for chunk in native_stream(size):
        scanner.feed(chunk)
    result = scanner.finish()
    elapsed = time.perf_counter() - started
    assert result.pixel_data is not None
    assert result.pixel_data.length == size
    assert result.size == result.pixel_data.value_offset + size + 16
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_memory_stays_flat_while_scanning() -> None:
    scanner = Part10Scanner()
    tracemalloc.start()
    try:
        for chunk in native_stream(256 * 1024**2, chunk=(1 << 20) + 3):
            scanner.feed(chunk)
        scanner.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2  # the scanner holds no chunk, only a few header bytes


def test_many_fragments_fed_in_odd_chunks() -> None:
    fragments = [bytes([k % 251]) * (1000 + k % 7) for k in range(3000)]
    data = part10(small_dataset(), JPEGBaseline8Bit, pixel=encapsulated(fragments, []))
    result = scan(data, 4093)
    assert result.pixel_data is not None
    assert len(result.pixel_data.fragments) == 3000
    assert [data[o : o + n] for o, n in result.pixel_data.fragments[-3:]] == fragments[-3:]


# -- parse_header -----------------------------------------------------------------------


ROUND_TRIP = [
    "test_files/CT_small.dcm",
    "test_files/MR_small_implicit.dcm",
    "test_files/MR_small_bigendian.dcm",
    "test_files/JPEG2000.dcm",
    "test_files/rtplan.dcm",
    "test_files/waveform_ecg.dcm",
    "test_files/image_dfl.dcm",
    "test_files/SC_rgb_rle_2frame.dcm",
    "test_files/UN_sequence.dcm",
    "charset_files/chrH31.dcm",
    "charset_files/chrSQEncoding1.dcm",
]


def same_values(ours: Dataset, theirs: Dataset, skip: frozenset[int] = frozenset()) -> None:
    # (Iterating a Dataset yields elements, not tags.)
    tags = [t for t in theirs.keys() if t not in skip]  # noqa: SIM118
    assert sorted(ours.keys()) == sorted(tags)
    for elem in theirs:
        if elem.tag in skip:
            continue
        mine = ours[elem.tag]
        if elem.VR == "SQ":
            assert len(mine.value) == len(elem.value)
            for a, b in zip(mine.value, elem.value, strict=True):
                same_values(a, b)
        else:
            assert mine.value == elem.value, elem


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_parse_header_round_trip(name: str, tmp_path: Path) -> None:
    data = read(name)
    scanner = Part10Scanner()
    scanner.feed(data)
    meta = scanner.file_meta  # known before the end of the stream, as STOW uses it
    result = scanner.finish()
    assert meta is not None
    assert (meta.meta_end, meta.transfer_syntax) == (result.meta_end, result.transfer_syntax)
    header, _, full = oracle(name)
    from_bytes = parse_header(data, result.header_end)
    # With the scanner's File Meta the parse skips walking it again: the same dataset.
    from_scan = parse_header(data, result.header_end, meta)
    path = tmp_path / "instance.dcm"
    path.write_bytes(data)
    with path.open("rb") as fp:
        from_file = parse_header(fp, result.header_end)
        for ds in (from_bytes, from_scan, from_file):
            assert "PixelData" not in ds
            assert ds.file_meta.TransferSyntaxUID == header.file_meta.TransferSyntaxUID
            assert ds.file_meta == header.file_meta
            assert ds.preamble == header.preamble
            assert ds.original_encoding == header.original_encoding
            if result.transfer_syntax in DEFLATED:
                same_values(ds, full, frozenset({0x7FE00010}))
            else:
                same_values(ds, header)


class CountingFile(io.RawIOBase):
    """A file that records the furthest byte anyone read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.furthest = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.furthest = max(self.furthest, self._data.tell())
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()


def big_header_instance() -> bytes:
    ds = small_dataset()
    ds.add_new(0x00091010, "LO", "BIG")  # private creator (0009,0010)
    ds.add_new(0x00091001, "OB", b"\x05" * 500_000)
    ds.add_new(0x00420011, "OB", b"%PDF" * 100_000)  # Encapsulated Document
    ds.add_new(0x0040A160, "UT", "long text " * 20_000)  # Text Value, 200 kB
    ds.add_new(0x00081140, "SQ", Sequence([Dataset()]))
    ds[0x00081140].value[0].ReferencedSOPInstanceUID = "1.2.3"
    return part10(ds, pixel=explicit(0x7FE00010, b"OW", b"\0" * 64))


def test_parse_header_reads_no_further_than_needed() -> None:
    data = big_header_instance()
    result = scan(data)
    source = CountingFile(data)
    ds = parse_header(source, result.header_end)
    assert source.furthest <= result.header_end
    # Large binary values stay unread; the long text was read (it is not bulk data).
    for tag in (0x00091001, 0x00420011):
        raw = ds.get_item(tag, keep_deferred=True)
        assert isinstance(raw, RawDataElement)
        assert raw.value is None
    assert ds.TextValue.startswith("long text")
    # Deferred values are read through the source while it is open.
    assert ds[0x00091001].value == b"\x05" * 500_000


def test_parse_header_dataset_survives_its_source() -> None:
    from service.dicom.dicomjson import instance_json

    data = big_header_instance()
    result = scan(data)
    source = io.BytesIO(data)
    ds = parse_header(source, result.header_end)
    source.close()
    text = instance_json(ds, result.pixel_data)
    assert b'"0040A160":{"vr":"UT","Value":["long text' in text
    assert b'"00420011":{"vr":"OB","BulkDataURI":"{+bulk}/bulkdata/00420011"}' in text


def test_parse_header_errors() -> None:
    # pydicom's error, as InstanceRejected: a header pydicom cannot parse (the scanner
    # would have refused it; parse_header does not rely on that).
    tail = undefined(0x00081140, b"SQ") + explicit(0x00080016, b"UI", b"12") + seq_end()
    broken = part10(small_dataset(), tail=tail)
    with pytest.raises(InstanceRejected) as info:
        parse_header(broken, len(broken))
    assert info.value.reason == CANNOT_UNDERSTAND
    assert info.value.message.startswith("cannot parse the DICOM header: OSError: No tag")
    with pytest.raises(InstanceRejected, match="not a DICOM Part 10 file"):
        parse_header(b"\0" * 300, 300)
    data = read("test_files/CT_small.dcm")
    result = scan(data)
    # I/O errors of the source are not the instance's fault.

    class Failing(CountingFile):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 1000:
                raise OSError("disk on fire")
            return super().read(size)

    with pytest.raises(OSError, match="disk on fire"):
        parse_header(Failing(data), result.header_end)


def test_parse_header_accepts_what_the_stow_spool_gives(tmp_path: Path) -> None:
    # The STOW spool hands over everything received so far, which may run past the
    # header; parse_header must stop at header_end.
    data = read("test_files/JPEG2000.dcm")
    result = scan(data)
    ds = parse_header(data + b"garbage after", result.header_end)
    assert "PixelData" not in ds
    file: IO[bytes]
    with (tmp_path / "x").open("w+b") as file:
        file.write(data)
        file.seek(1234)  # wherever it was left
        assert parse_header(file, result.header_end).SOPInstanceUID == ds.SOPInstanceUID


def test_parse_header_with_a_command_set_group_like_dcmread() -> None:
    """An implicit VR data set that starts with Command Set elements (group 0000), as
    some toolkits write: the same elements as pydicom's dcmread (which reads that group
    apart, then merges it). In an explicit VR data set such elements are refused by the
    scan before any parsing."""
    data = part10(small_dataset(), ImplicitVRLittleEndian)
    meta_end = 132 + 12 + struct.unpack_from("<L", data, 140)[0]
    uid = b"1.2.840.10008.5.1.4.1.1.7\0"
    command = struct.pack("<HHL", 0x0000, 0x0002, len(uid)) + uid  # implicit VR
    data = data[:meta_end] + command + data[meta_end:]
    result = scan(data)
    header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    mine = parse_header(data, result.header_end)
    same_values(mine, header)
    assert mine.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert mine.PatientName == "Doe^John"
