from __future__ import annotations

import pytest

from service.dicom.uid import is_valid_uid
from service.dicomweb.media import (
    EXPLICIT_VR_LITTLE_ENDIAN as ELE,
)
from service.dicomweb.media import (
    choose_instance_media,
    choose_json,
    parse_accept,
    parse_media_type,
)
from service.errors import MalformedRequest, NotAcceptable

JPEG = "1.2.840.10008.1.2.4.50"


def test_quoted_and_unquoted_parameters_are_equal() -> None:
    a = parse_media_type('multipart/related; type="application/dicom"; boundary="a;b,c"')
    b = parse_media_type("Multipart/Related;type=application/dicom;boundary=x")
    assert a.type == b.type == "multipart/related"
    assert a.params == {"type": "application/dicom", "boundary": "a;b,c"}
    assert b.params["type"] == "application/dicom"


@pytest.mark.parametrize("bad", ["dicom", "/x", "a/", 'a/b; type="x', "a/b; novalue", "a/b;q=2"])
def test_malformed_media_types(bad: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_media_type(bad)


def test_accept_ranking_by_q_then_order() -> None:
    ranked = parse_accept("a/x;q=0.5, b/y, c/z;q=0.9, d/w;q=0")
    assert [m.type for m in ranked] == ["b/y", "c/z", "a/x"]
    assert [m.type for m in parse_accept(None)] == ["*/*"]


@pytest.mark.parametrize(
    ("accept", "multipart", "syntax"),
    [
        (None, True, ELE),
        ("*/*", True, ELE),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', True, "*"),
        ("multipart/related; type=application/dicom", True, ELE),
        (f"multipart/related; type=application/dicom; transfer-syntax={ELE}", True, ELE),
        ("application/dicom", False, ELE),
        ("application/dicom; transfer-syntax=*", False, "*"),
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}, '
            "multipart/related; type=application/dicom; transfer-syntax=*;q=0.5",
            True,
            "*",
        ),
    ],
)
def test_instance_negotiation(accept: str | None, multipart: bool, syntax: str) -> None:
    choice = choose_instance_media(accept, {ELE}, single_part_ok=True)
    assert (choice.multipart, choice.transfer_syntax) == (multipart, syntax)


def test_single_part_refused_for_many_instances() -> None:
    with pytest.raises(NotAcceptable, match="single part"):
        choose_instance_media("application/dicom", {ELE}, single_part_ok=False)


def test_syntax_not_held_is_406_with_advice() -> None:
    with pytest.raises(NotAcceptable, match="transfer-syntax=\\*"):
        choose_instance_media(None, {JPEG}, single_part_ok=True)
    with pytest.raises(NotAcceptable, match="image/jpeg is not offered"):
        choose_instance_media("image/jpeg", {ELE}, single_part_ok=True)
    with pytest.raises(NotAcceptable, match="type=application/dicom\\+xml"):
        choose_instance_media(
            'multipart/related; type="application/dicom+xml"', {ELE}, single_part_ok=True
        )


def test_json_negotiation() -> None:
    for ok in (None, "application/dicom+json", "application/json", "*/*", "application/*"):
        choose_json(ok)
    with pytest.raises(NotAcceptable, match="dicom\\+json"):
        choose_json('multipart/related; type="application/dicom+xml"')


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0", True),
        ("2.25.0", True),
        ("1.02.3", False),
        ("1..2", False),
        (".1", False),
        ("1.", False),
        ("", False),
        ("1.2.a", False),
        ("1" * 65, False),
        ("1" * 64, True),
        ("../etc", False),
    ],
)
def test_uid_syntax(uid: str, ok: bool) -> None:
    assert is_valid_uid(uid) is ok
