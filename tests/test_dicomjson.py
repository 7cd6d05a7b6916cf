"""instance_json and index_attributes on pydicom's bundled files and on odd data sets."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from service.dicom.dicomjson import (
    BULK_PLACEHOLDER,
    INDEX_KEYWORDS,
    element_text,
    index_attributes,
    instance_json,
    instance_object,
)
from service.dicom.frames import int_value
from service.dicom.part10 import PixelDataLocation, ScanResult, parse_header
from tests.test_part10 import (
    BROKEN,
    dicom_files,
    explicit,
    oracle,
    part10,
    read,
    scan,
    small_dataset,
)

TAG_KEY = re.compile(r"[0-9A-F]{8}")
VR = re.compile(r"[A-Z]{2}")
BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def load(name: str) -> tuple[Dataset, ScanResult]:
    data = read(name)
    result = scan(data)
    with warnings.catch_warnings():
        # A few files make pydicom warn while reading (tests turn warnings into errors).
        warnings.simplefilter("ignore")
        return parse_header(data, result.header_end), result


def as_json(name: str, **kwargs: Any) -> dict[str, Any]:
    ds, result = load(name)
    obj: dict[str, Any] = json.loads(instance_json(ds, result.pixel_data, **kwargs))
    return obj


def check_model(obj: dict[str, Any], limit: int, *, top: bool) -> None:
    """The shape PS3.18 Annex F gives a data set, and our promises about it."""
    keys = list(obj)
    assert keys == sorted(keys)
    for key, element in obj.items():
        assert TAG_KEY.fullmatch(key), key
        assert not key.endswith("0000"), "group lengths are left out"
        if top:
            assert not key.startswith("0002"), "File Meta is left out"
        assert VR.fullmatch(element["vr"])
        payload = set(element) - {"vr"}
        assert payload <= {"Value", "BulkDataURI", "InlineBinary"}
        assert len(payload) <= 1
        if "Value" in element:
            assert element["Value"], "an empty Value is written as no Value"
            assert element["vr"] not in BINARY
        if "InlineBinary" in element:
            assert element["vr"] in BINARY
            assert len(base64.b64decode(element["InlineBinary"])) <= limit
        if "BulkDataURI" in element:
            assert element["BulkDataURI"].startswith(f"{BULK_PLACEHOLDER}/bulkdata/")
        if element["vr"] == "SQ":
            for item in element.get("Value", []):
                check_model(item, limit, top=False)
        elif element["vr"] == "PN":
            for name in element.get("Value", []):
                assert name is None or (
                    name and set(name) <= {"Alphabetic", "Ideographic", "Phonetic"}
                )


@pytest.mark.parametrize("name", [n for n in dicom_files() if n.split("/")[-1] not in BROKEN])
def test_every_file_gives_valid_dicom_json(name: str) -> None:
    ds, result = load(name)
    # No warning filter here: the encoder must not fail when warnings are errors.
    text = instance_json(ds, result.pixel_data, inline_binary_max=256)
    obj = json.loads(text.decode("utf-8"))
    assert text.startswith(b'{"') or text == b"{}"
    assert b"\n" not in text
    check_model(obj, 256, top=True)
    if result.pixel_data is not None:
        key = f"{result.pixel_data.tag:08X}"
        assert obj[key] == {
            "vr": result.pixel_data.vr,
            "BulkDataURI": f"{BULK_PLACEHOLDER}/bulkdata/{key}",
        }
    attributes = index_attributes(ds)
    assert set(attributes) <= set(INDEX_KEYWORDS)
    assert all(isinstance(v, str) and v for v in attributes.values())
    assert attributes["TransferSyntaxUID"] == result.transfer_syntax


def _normalize(values: list[Any], vr: str) -> list[Any] | None:
    if vr == "PN":
        values = [None if v is None else {k: x for k, x in v.items() if x} or None for v in values]
    elif vr in {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "UC", "ST", "LT", "UT"}:
        # pydicom keeps insignificant padding inside multiple values; we strip it.
        values = [v.strip() or None if isinstance(v, str) else v for v in values]
    return None if all(v is None for v in values) else values


def _compare(
    ours: dict[str, Any], theirs: dict[str, Any], path: str, diffs: list[str], *, swapped: bool
) -> None:
    for key in sorted(set(ours) | set(theirs)):
        if key not in theirs:
            continue  # pydicom dropped an element it could not convert; we kept it
        assert key in ours, path + key
        a, b = ours[key], theirs[key]
        assert a["vr"] == b["vr"], path + key
        if a["vr"] == "SQ":
            for n, (x, y) in enumerate(zip(a.get("Value", []), b.get("Value", []), strict=True)):
                _compare(x, y, f"{path}{key}/{n}/", diffs, swapped=swapped)
        elif "InlineBinary" in b or "InlineBinary" in a:
            if not swapped or a["vr"] in ("OB", "UN"):
                assert a.get("InlineBinary") == b.get("InlineBinary"), path + key
        elif _normalize(a.get("Value", []), a["vr"]) != _normalize(b.get("Value", []), b["vr"]):
            diffs.append(f"{path}{key}: {a} != {b}")


@pytest.mark.parametrize("name", [n for n in dicom_files() if n.split("/")[-1] not in BROKEN])
def test_agrees_with_pydicom_to_json_dict(name: str) -> None:
    """pydicom's own encoder as the oracle, where it works (it raises on a bad DS)."""
    ds, result = load(name)
    ours = json.loads(instance_json(ds, None, inline_binary_max=1 << 30))
    header, _, _ = oracle(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = header.to_json_dict(bulk_data_threshold=1 << 40, suppress_invalid_tags=True)
    theirs = {
        k: v
        for k, v in theirs.items()
        if not k.startswith("0002") and not k.endswith("0000") and k != "FFFCFFFC"
    }
    diffs: list[str] = []
    # pydicom's InlineBinary keeps big endian byte order for OW and the like; ours is LE.
    _compare(ours, theirs, "", diffs, swapped=result.transfer_syntax == ExplicitVRBigEndian)
    assert diffs == []


def test_one_walk_gives_the_json_and_the_index_attributes() -> None:
    """instance_object(index=...) is instance_json plus index_attributes, over every
    bundled file (ingest takes both from one walk)."""
    for name in dicom_files():
        if name.split("/")[-1] in BROKEN:
            continue
        ds, result = load(name)
        expected = instance_json(ds, result.pixel_data), index_attributes(ds)
        found: dict[str, str] = {}
        obj = instance_object(ds, result.pixel_data, index=found)
        assert (msgspec.json.encode(obj), found) == expected, name


def test_raw_and_converted_elements_give_the_same_json() -> None:
    """Elements pydicom has converted (someone read ds.X) encode like raw ones."""

    def touch(ds: Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    touch(item)

    for name in dicom_files():
        if name.split("/")[-1] in BROKEN:
            continue
        ds, result = load(name)
        before = instance_json(ds, result.pixel_data), index_attributes(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            touch(ds)
        assert (instance_json(ds, result.pixel_data), index_attributes(ds)) == before, name


# -- golden values from real files ------------------------------------------------------


def test_person_names_with_ideographic_and_phonetic_groups() -> None:
    h31 = as_json("charset_files/chrH31.dcm")
    assert h31["00100010"] == {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    }
    assert h31["00080005"] == {"vr": "CS", "Value": [None, "ISO 2022 IR 87"]}
    x1 = as_json("charset_files/chrX1.dcm")
    assert x1["00100010"]["Value"] == [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}]
    korean = as_json("charset_files/chrI2.dcm")
    assert korean["00100010"]["Value"][0]["Phonetic"] == "홍^길동"
    greek = as_json("charset_files/chrGreek.dcm")
    assert greek["00100010"]["Value"] == [{"Alphabetic": "Διονυσιος"}]


def test_sequence_items_inherit_the_character_set() -> None:
    obj = as_json("charset_files/chrSQEncoding1.dcm")
    item = obj["00321064"]["Value"][0]
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


def test_numbers_private_tags_and_inline_binary_of_a_ct() -> None:
    ds, result = load("test_files/CT_small.dcm")
    text = instance_json(ds, result.pixel_data)
    # DS keeps the digits it was written with; IS and US are numbers.
    assert b'"00280030":{"vr":"DS","Value":[0.661468,0.661468]}' in text
    assert b'"00200032":{"vr":"DS","Value":[-158.135803,-179.035797,-75.699997]}' in text
    obj = json.loads(text)
    assert obj["00200013"] == {"vr": "IS", "Value": [1]}
    assert obj["00280010"] == {"vr": "US", "Value": [128]}
    assert obj["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    # Private elements are kept, creator and all; small binary is inline.
    assert obj["00090010"] == {"vr": "LO", "Value": ["GEMS_IDEN_01"]}
    raw = ds[0x00431028].value
    assert base64.b64decode(obj["00431028"]["InlineBinary"]) == raw
    assert obj["7FE00010"] == {"vr": "OW", "BulkDataURI": "{+bulk}/bulkdata/7FE00010"}
    # The same element becomes bulk data when the inline limit is lower.
    small = json.loads(instance_json(ds, result.pixel_data, inline_binary_max=len(raw) - 1))
    assert small["00431028"] == {"vr": "OB", "BulkDataURI": "{+bulk}/bulkdata/00431028"}


def test_bulk_data_uris_name_their_path() -> None:
    ecg = as_json("test_files/waveform_ecg.dcm")
    for index, item in enumerate(ecg["54000100"]["Value"]):
        assert item["54001010"] == {
            "vr": "OW",
            "BulkDataURI": f"{{+bulk}}/bulkdata/54000100/{index}/54001010",
        }
    overlay = as_json("test_files/examples_overlay.dcm")
    assert overlay["60003000"] == {"vr": "OW", "BulkDataURI": "{+bulk}/bulkdata/60003000"}


def test_nested_bulk_paths_and_float_pixel_data() -> None:
    inner = Dataset()
    inner.add_new(0x00091010, "LO", "ACME")
    inner.add_new(0x00091001, "OB", b"\x01" * 2000)
    outer = [Dataset(), Dataset()]
    outer[1].ReferencedSOPInstanceUID = "1.2"
    outer[1].add_new(0x00400275, "SQ", Sequence([inner]))
    ds = small_dataset()
    ds.add_new(0x00081140, "SQ", Sequence(outer))
    data = part10(ds)
    parsed = parse_header(data, len(data))
    pixel = PixelDataLocation(
        tag=0x7FE00008, vr="OF", element_offset=len(data), value_offset=len(data) + 12, length=8
    )
    obj = json.loads(instance_json(parsed, pixel))
    deep = obj["00081140"]["Value"][1]["00400275"]["Value"][0]["00091001"]
    assert deep == {"vr": "OB", "BulkDataURI": "{+bulk}/bulkdata/00081140/1/00400275/0/00091001"}
    assert obj["00081140"]["Value"][0] == {}
    assert obj["7FE00008"] == {"vr": "OF", "BulkDataURI": "{+bulk}/bulkdata/7FE00008"}
    assert list(obj) == sorted(obj)


# -- odd but parseable data sets --------------------------------------------------------


def odd_instance(charset: bytes = b"ISO_IR 192") -> bytes:
    body = b"".join(
        [
            explicit(0x00080005, b"CS", charset),
            explicit(0x00080008, b"CS", b"A\\\\B "),
            explicit(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"),
            explicit(0x00080018, b"UI", b"1.2.3.4.5\0"),
            explicit(0x00081160, b"IS", b""),
            explicit(0x00100010, b"PN", b"=Ideo^Only\\A^B "),
            explicit(0x00100020, b"UN", b"ID1 "),  # an explicit UN for Patient ID (LO)
            explicit(0x00100021, b"LO", b"bad \xff\xfe utf8"),
            explicit(0x00181050, b"DS", b"abc\\ +2.50 \\1e999\\007 "),
            explicit(0x00189087, b"FD", struct.pack("<2d", float("nan"), float("inf"))),
            explicit(0x00200012, b"IS", b"1.5 "),
            explicit(0x00200013, b"IS", b"+0012 "),
            explicit(0x00209165, b"AT", struct.pack("<4H", 0x0010, 0x0010, 0x7FE0, 0x0010)),
            explicit(0x00280010, b"US", b"\x01\x00\x02"),  # odd length for a US
            explicit(0x00280011, b"US", b""),
            explicit(0x0040A160, b"UT", b"one\\value "),
            explicit(0x00431001, b"UN", b"\x01\x02\x03"),  # private, no creator
            explicit(0x00450010, b"LO", b"ACME 1.0"),
            explicit(0x00451001, b"UN", b"opaque"),
            explicit(0x00460010, b"LO", b""),
            explicit(0x00881140, b"SQ", b""),
        ]
    )
    return part10(Dataset(), pixel=body)


@pytest.mark.parametrize("charset", [b"ISO_IR 192", b"ISO_IR 999 ", b""])
def test_odd_values_never_raise_and_do_not_depend_on_warning_settings(charset: bytes) -> None:
    data = odd_instance(charset)
    result = scan(data)
    outputs = []
    for action in ("ignore", "error"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = parse_header(data, result.header_end)
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            outputs.append((instance_json(ds, None), index_attributes(ds)))
    assert outputs[0] == outputs[1]
    obj = json.loads(outputs[0][0])
    check_model(obj, 1024, top=True)
    assert obj["00080008"] == {"vr": "CS", "Value": ["A", None, "B"]}
    assert obj["00081160"] == {"vr": "IS"}
    assert obj["00100010"]["Value"] == [{"Ideographic": "Ideo^Only"}, {"Alphabetic": "A^B"}]
    assert obj["00100020"] == {"vr": "LO", "Value": ["ID1"]}
    assert obj["00100021"]["vr"] == "LO"
    # Not numbers stay strings; numbers keep their JSON form.
    assert obj["00181050"] == {"vr": "DS", "Value": ["abc", 2.5, "1e999", 7.0]}
    assert obj["00189087"] == {"vr": "FD", "Value": ["NaN", "Infinity"]}
    assert obj["00200012"] == {"vr": "IS", "Value": ["1.5"]}
    assert obj["00200013"] == {"vr": "IS", "Value": [12]}
    assert obj["00209165"] == {"vr": "AT", "Value": ["00100010", "7FE00010"]}
    assert obj["00280010"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"\1\0\2").decode()}
    assert obj["00280011"] == {"vr": "US"}
    assert obj["0040A160"] == {"vr": "UT", "Value": ["one\\value"]}
    assert obj["00431001"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"\1\2\3").decode()}
    assert obj["00450010"] == {"vr": "LO", "Value": ["ACME 1.0"]}
    assert obj["00451001"]["vr"] == "UN"
    assert obj["00460010"] == {"vr": "LO"}
    assert obj["00881140"] == {"vr": "SQ"}
    attributes = outputs[0][1]
    assert attributes["PatientName"] == "=Ideo^Only\\A^B"
    assert attributes["PatientID"] == "ID1"
    assert attributes["InstanceNumber"] == "+0012"
    assert "Rows" not in attributes  # unreadable, so not indexed
    assert "Columns" not in attributes  # empty


def test_big_endian_binary_is_inline_in_little_endian_order() -> None:
    ds = small_dataset()
    ds.add_new(0x00091010, "LO", "ACME")
    ds.add_new(0x00280106, "US", 0x0102)
    ds.add_new(0x00281201, "OW", b"\x01\x02\x03\x04")  # Red Palette LUT Data
    data = part10(ds, ExplicitVRBigEndian)
    parsed = parse_header(data, len(data))
    obj = json.loads(instance_json(parsed, None))
    # The file holds the words 0x0102 and 0x0304 (big endian); JSON has them little endian.
    assert data.endswith(b"\x01\x02\x03\x04")
    assert base64.b64decode(obj["00281201"]["InlineBinary"]) == b"\x02\x01\x04\x03"
    assert obj["00280106"] == {"vr": "US", "Value": [0x0102]}
    assert obj["00280010"] == {"vr": "US", "Value": [2]}


def test_implicit_vr_uses_the_dictionaries() -> None:
    ds = small_dataset()
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5  # "US or SS": SS because Pixel Representation is 1
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")  # creator of block (0029,10xx)
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")  # known to pydicom's private dictionary
    ds.add_new(0x00291099, "LO", "unknown private")
    data = part10(ds, ImplicitVRLittleEndian)
    obj = json.loads(instance_json(parse_header(data, len(data)), None))
    assert obj["00280106"] == {"vr": "SS", "Value": [-5]}
    assert obj["00290010"] == {"vr": "LO", "Value": ["SIEMENS CSA HEADER"]}
    assert obj["00291008"] == {"vr": "CS", "Value": ["IMAGE NUM 4"]}
    assert obj["00291099"]["vr"] == "UN"


def test_deferred_binary_is_bulk_without_reading_and_inline_when_readable(
    tmp_path: Path,
) -> None:
    ds = small_dataset()
    ds.add_new(0x00091010, "LO", "ACME")
    ds.add_new(0x00091001, "OB", b"\x07" * 100_000)
    data = part10(ds)
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    with path.open("rb") as fp:
        parsed = parse_header(fp, len(data))
        inline = json.loads(instance_json(parsed, None, inline_binary_max=200_000))
    assert base64.b64decode(inline["00091001"]["InlineBinary"]) == b"\x07" * 100_000
    with path.open("rb") as fp:
        parsed = parse_header(fp, len(data))
    # The file is closed now: a deferred value that cannot be read is still bulk data.
    obj = json.loads(instance_json(parsed, None, inline_binary_max=200_000))
    assert obj["00091001"] == {"vr": "OB", "BulkDataURI": "{+bulk}/bulkdata/00091001"}


# -- index attributes --------------------------------------------------------------------


def test_index_attributes_of_a_ct() -> None:
    ds, _ = load("test_files/CT_small.dcm")
    attributes = index_attributes(ds)
    expected = {
        "StudyInstanceUID": "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
        "SeriesInstanceUID": "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
        "SOPInstanceUID": "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "PatientID": "1CT1",
        "PatientName": "CompressedSamples^CT1",
        "Modality": "CT",
        "StudyDate": "20040119",
        "InstanceNumber": "1",
        "Rows": "128",
        "Columns": "128",
        "BitsAllocated": "16",
        "TransferSyntaxUID": "1.2.840.10008.1.2.1",
        "SpecificCharacterSet": "ISO_IR 100",
    }
    assert {k: attributes.get(k) for k in expected} == expected
    assert "NumberOfFrames" not in attributes


def test_index_attributes_keep_the_dicom_string_form() -> None:
    ds, _ = load("charset_files/chrH31.dcm")
    attributes = index_attributes(ds)
    assert attributes["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert attributes["SpecificCharacterSet"] == "\\ISO 2022 IR 87"
    ds, _ = load("charset_files/chrX1.dcm")
    assert index_attributes(ds)["PatientName"] == "Wang^XiaoDong=王^小東"
    ds, _ = load("test_files/examples_ybr_color.dcm")
    assert index_attributes(ds)["NumberOfFrames"] == "30"


def test_index_attributes_read_the_transfer_syntax_from_file_meta() -> None:
    ds = dcmread(io.BytesIO(part10(small_dataset(), ImplicitVRLittleEndian)))
    assert index_attributes(ds)["TransferSyntaxUID"] == ImplicitVRLittleEndian
    bare = Dataset()
    bare.PatientID = "X"
    assert index_attributes(bare) == {"PatientID": "X"}


_UIDS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
_INTEGERS = ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel")


def _pydicom_int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("name", [n for n in dicom_files() if n.split("/")[-1] not in BROKEN])
def test_values_read_from_bytes_agree_with_pydicom(name: str) -> None:
    # Ingest reads UIDs and image sizes from the elements' bytes, without pydicom's
    # conversion: every encoding in the corpus (implicit VR, big endian, deflated)
    # must give what pydicom gives.
    ds, _ = load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = dcmread(io.BytesIO(read(name)), force=True)
        for keyword, tag in _UIDS.items():
            value = reference.get(keyword)
            expected = str(value).strip() if value not in (None, "") else ""
            assert element_text(ds, tag) == expected.rstrip("\0"), keyword
        for keyword in _INTEGERS:
            expected_int = _pydicom_int(reference, keyword)
            assert int_value(ds, keyword, -1) == (-1 if expected_int is None else expected_int)
