"""Tests of the multipart/related push parser and the response framing helpers."""

from __future__ import annotations

import random
import re

import pytest

from service.dicomweb.multipart import (
    Event,
    MultipartParser,
    PartBegin,
    PartData,
    PartEnd,
    closing_delimiter,
    make_boundary,
    part_header,
    part_separator,
)
from service.errors import MalformedRequest

B = "simple-boundary"

Part = tuple[dict[str, str], bytes]


def collapse(events: list[Event]) -> list[Part]:
    """Parts as (headers, body), checking the event grammar on the way."""
    parts: list[Part] = []
    headers: dict[str, str] | None = None
    body = bytearray()
    for event in events:
        if isinstance(event, PartBegin):
            assert headers is None, "PartBegin inside a part"
            headers, body = event.headers, bytearray()
        elif isinstance(event, PartData):
            assert headers is not None, "PartData outside a part"
            assert isinstance(event.data, bytes)
            assert event.data, "empty PartData"
            body += event.data
        else:
            assert isinstance(event, PartEnd)
            assert headers is not None, "PartEnd outside a part"
            parts.append((headers, bytes(body)))
            headers = None
    assert headers is None, "unterminated part"
    return parts


def parse_chunks(body: bytes, chunks: list[int] | int, boundary: str = B) -> list[Part]:
    """Parse ``body`` cut into chunks of the given size(s); require a clean close."""
    parser = MultipartParser(boundary)
    events: list[Event] = []
    pos = 0
    sizes = iter(chunks) if isinstance(chunks, list) else None
    while pos < len(body):
        size = next(sizes) if sizes is not None else chunks
        assert isinstance(size, int)
        events += parser.feed(body[pos : pos + size])
        pos += size
    parser.close()
    assert parser.finished
    return collapse(events)


def parse(body: bytes, boundary: str = B) -> list[Part]:
    return parse_chunks(body, max(len(body), 1), boundary)


def build(parts: list[tuple[str, bytes]], boundary: str = B) -> bytes:
    """A body framed with the response helpers, the way a response writer sends it."""
    pieces: list[bytes] = []
    for number, (content_type, body) in enumerate(parts):
        if number:
            pieces.append(part_separator())
        pieces += [part_header(boundary, content_type), body]
    pieces.append(closing_delimiter(boundary))
    return b"".join(pieces)


def feed_all(parser: MultipartParser, chunks: list[bytes], *, close: bool = True) -> None:
    for chunk in chunks:
        parser.feed(chunk)
    if close:
        parser.close()


def errors(body: bytes, boundary: str = B, **kwargs: int) -> str:
    """The MalformedRequest message from feeding ``body`` in one go and closing."""
    parser = MultipartParser(boundary, **kwargs)
    with pytest.raises(MalformedRequest) as info:
        feed_all(parser, [body])
    return info.value.message


def random_splits(body: bytes, rng: random.Random, most: int) -> list[int]:
    sizes: list[int] = []
    total = 0
    while total < len(body):
        sizes.append(rng.randint(1, most))
        total += sizes[-1]
    return sizes


TRICKY = (
    b"\r\n--simple-bound\r\n--\r\n-simple-boundary--simple-boundary"
    b"\r\n--simple-boundarz\r--simple-boundary\n--simple-boundary\r"
)

SAMPLE = (
    b"preamble, ignored\r\n"
    b"--simple-boundary  \t\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Location: one\r\n"
    b"\r\n" + bytes(range(256)) * 3 + b"\r\n"
    b"--simple-boundary\r\n"
    b"\r\n" + TRICKY + b"\r\n"
    b"--simple-boundary\r\n"
    b"content-type: text/plain\r\n"
    b"\r\n"
    b"\r\n"
    b"--simple-boundary\r\n"
    b"X-Empty:\r\n"
    b"\r\n"
    b"\r\r\n\r\n\r\n-\r\n"
    b"--simple-boundary--  \r\n"
    b"epilogue --simple-boundary\r\n garbage"
)

SAMPLE_PARTS: list[Part] = [
    (
        {"content-type": "application/dicom", "content-location": "one"},
        bytes(range(256)) * 3,
    ),
    ({}, TRICKY),
    ({"content-type": "text/plain"}, b""),
    ({"x-empty": ""}, b"\r\r\n\r\n\r\n-"),
]


# -- well-formed bodies --------------------------------------------------------------


def test_single_part() -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM-data\r\n--b--\r\n"
    assert parse(body, "b") == [({"content-type": "application/dicom"}, b"DICM-data")]


def test_events_in_order() -> None:
    parser = MultipartParser("b")
    events = parser.feed(b"--b\r\nA: 1\r\n\r\nxy\r\n--b\r\n\r\nz\r\n--b--")
    assert events == [
        PartBegin({"a": "1"}),
        PartData(b"xy"),
        PartEnd(),
        PartBegin({}),
        PartData(b"z"),
        PartEnd(),
    ]
    assert parser.finished
    parser.close()


def test_many_parts() -> None:
    rng = random.Random(7)
    parts = [(f"application/dicom; n={n}", rng.randbytes(rng.randint(0, 3000))) for n in range(200)]
    parsed = parse(build(parts))
    assert [(h["content-type"], body) for h, body in parsed] == parts


def test_sample_in_one_feed() -> None:
    assert parse(SAMPLE) == SAMPLE_PARTS


@pytest.mark.parametrize("size", range(1, 21))
def test_every_small_chunk_size(size: int) -> None:
    assert parse_chunks(SAMPLE, size) == SAMPLE_PARTS


def test_random_splits() -> None:
    rng = random.Random(20240601)
    for _ in range(300):
        assert parse_chunks(SAMPLE, random_splits(SAMPLE, rng, 64)) == SAMPLE_PARTS


def test_every_two_way_split() -> None:
    for cut in range(1, len(SAMPLE)):
        assert parse_chunks(SAMPLE, [cut, len(SAMPLE) - cut]) == SAMPLE_PARTS


def test_large_random_body_random_splits() -> None:
    rng = random.Random(5)
    parts = [("application/dicom", rng.randbytes(rng.randint(0, 200_000))) for _ in range(12)]
    body = build(parts)
    expected = parse(body)
    assert [b for _, b in expected] == [b for _, b in parts]
    for most in (1000, 65536):
        assert parse_chunks(body, random_splits(body, rng, most)) == expected


def test_body_bytes_pass_through_without_copy() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b\r\n\r\n")
    chunk = b"x" * 100_000
    events = parser.feed(chunk)
    assert len(events) == 1
    assert isinstance(events[0], PartData)
    assert events[0].data is chunk


def test_memory_bounded_for_long_part() -> None:
    parser = MultipartParser(B)
    parser.feed(b"--" + B.encode() + b"\r\n\r\n")
    total = 0
    chunk = b"\r\n--simple-boundar" + b"z" * 1000 + b"\r\n--simple"
    for _ in range(1000):
        for event in parser.feed(chunk):
            assert isinstance(event, PartData)
            total += len(event.data)
        assert len(parser._buf) < len(B) + 4  # only a possible delimiter prefix is held
    assert total == 1000 * len(chunk) - len(b"\r\n--simple")


def test_first_delimiter_at_start_without_crlf() -> None:
    assert parse(b"--b\r\n\r\nx\r\n--b--", "b") == [({}, b"x")]


def test_body_starting_with_crlf_before_first_delimiter() -> None:
    assert parse(b"\r\n--b\r\n\r\nx\r\n--b--", "b") == [({}, b"x")]


def test_preamble_ignored_including_lookalikes() -> None:
    # "xx--b" is not at a line start, "\n--b" lacks the CR; neither is a delimiter.
    body = b"xx--b\r\n-b\n--b\r\n\r\n--b\r\n\r\nbody\r\n--b--"
    assert parse(body, "b") == [({}, b"body")]


def test_long_preamble_is_not_kept() -> None:
    parser = MultipartParser("b")
    for _ in range(1000):
        assert parser.feed(b"p" * 1000 + b"\r\n-") == []
        assert len(parser._buf) < 8
    parser.feed(b"-b\r\n\r\nx\r\n--b--")
    assert parser.finished


def test_epilogue_ignored() -> None:
    parser = MultipartParser("b")
    events = parser.feed(b"--b\r\n\r\nx\r\n--b--\r\nepilogue\r\n--b\r\n\r\nnot a part")
    assert collapse(events) == [({}, b"x")]
    assert parser.feed(b"more epilogue, \x00 binary, --b\r\n") == []
    assert parser.feed(b"--b--") == []
    parser.close()
    assert parser.finished


def test_close_delimiter_without_trailing_crlf() -> None:
    assert parse(b"--b\r\n\r\nx\r\n--b--", "b") == [({}, b"x")]


def test_transport_padding() -> None:
    body = b"--b \t \r\n\r\n1\r\n--b\t\r\n\r\n2\r\n--b  --\r\n"
    assert parse(body, "b") == [({}, b"1"), ({}, b"2")]


def test_no_parts_at_all() -> None:
    parser = MultipartParser("b")
    assert parser.feed(b"--b--\r\n") == []
    assert parser.finished
    parser.close()


def test_part_without_headers() -> None:
    assert parse(b"--b\r\n\r\npayload\r\n--b--", "b") == [({}, b"payload")]


def test_empty_part_bodies() -> None:
    body = b"--b\r\nA: 1\r\n\r\n\r\n--b\r\n\r\n\r\n--b--"
    assert parse(body, "b") == [({"a": "1"}, b""), ({}, b"")]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_parts_without_body_section(size: int) -> None:
    # RFC 2046: body-part := MIME-part-headers [CRLF *OCTET]; with the optional part
    # left out, the header block's last CRLF is directly followed by the delimiter.
    body = b"--b\r\nA: 1\r\n\r\n--b\r\n\r\n--b \r\nC: 3\r\n\r\n--b--"
    assert parse_chunks(body, size, "b") == [({"a": "1"}, b""), ({}, b""), ({"c": "3"}, b"")]


def test_body_starting_like_the_boundary() -> None:
    assert parse(b"--b\r\n\r\n--c\r\n--b--", "b") == [({}, b"--c")]
    assert parse(b"--bound\r\n\r\n--bou\r\n--bound--", "bound") == [({}, b"--bou")]
    assert parse(b"--b\r\nA: 1\n\n--b\r\n--b--", "b") == [({"a": "1"}, b"--b")]
    message = errors(b"--b\r\n\r\n--bx\r\n--b--", "b")
    assert "must be followed by CRLF or '--'" in message


def test_header_whitespace_case_and_duplicates() -> None:
    body = (
        b"--b\r\n"
        b"CONTENT-TYPE:application/dicom   \r\n"
        b"X-Spaced :  \t value with  inner  spaces \t\r\n"
        b"X-Dup: first\r\n"
        b"x-dup: second\r\n"
        b"X-Colons: a:b:c\r\n"
        b"\r\n"
        b"x\r\n--b--"
    )
    [(headers, _)] = parse(body, "b")
    assert headers == {
        "content-type": "application/dicom",
        "x-spaced": "value with  inner  spaces",
        "x-dup": "second",
        "x-colons": "a:b:c",
    }


def test_header_folding() -> None:
    body = (
        b"--b\r\n"
        b"Content-Type: multipart/related;\r\n"
        b'   type="application/dicom";\r\n'
        b"\tboundary=x\r\n"
        b"X-Empty-Then-Folded:\r\n"
        b"  folded\r\n"
        b"\r\n"
        b"x\r\n--b--"
    )
    [(headers, _)] = parse(body, "b")
    assert headers == {
        "content-type": 'multipart/related; type="application/dicom"; boundary=x',
        "x-empty-then-folded": "folded",
    }


def test_lf_only_header_lines_tolerated() -> None:
    body = b"--b\nContent-Type: application/dicom\nX-A: 1\r\n\nbody\nline\r\n--b\n\nz\r\n--b--\n"
    assert parse(body, "b") == [
        ({"content-type": "application/dicom", "x-a": "1"}, b"body\nline"),
        ({}, b"z"),
    ]


def test_lf_only_delimiter_is_body_data() -> None:
    # Only CRLF--boundary ends a body: a bare LF before it is binary data.
    parser = MultipartParser("b")
    events = parser.feed(b"--b\r\n\r\nx\n--b\r\ny\r\n--b--")
    assert collapse(events) == [({}, b"x\n--b\r\ny")]


def test_header_bytes_are_latin1() -> None:
    body = b"--b\r\nX-Name: caf\xe9\r\n\r\nx\r\n--b--"
    assert parse(body, "b") == [({"x-name": "caf\xe9"}, b"x")]


@pytest.mark.parametrize(
    "boundary",
    [
        "a",
        "x" * 70,
        "with spaces inside",
        "=_Part_0_12.34",
        "'()+_,-./:=?",
        "0123456789ABCDEFabcdef",
        " leading space",
        "MIME_boundary-DICOM=?",
    ],
)
def test_legal_boundaries(boundary: str) -> None:
    parts = [("application/dicom", b"x--" + boundary.encode() + b"\r\n-"), ("text/plain", b"")]
    body = build(parts, boundary)
    expected = [({"content-type": ct}, data) for ct, data in parts]
    assert parse(body, boundary) == expected
    for size in (1, 2, 3, 7):
        assert parse_chunks(body, size, boundary) == expected


def test_partial_boundaries_in_body_are_data() -> None:
    data = (
        b"\r\n--simple-boundar"  # prefix, then end of chunk in some splits
        b"\r\n--simple-boundarY"
        b"\r\n-simple-boundary"
        b"\r--simple-boundary"
        b"--simple-boundary--"  # the boundary without CRLF before it
        b"\n--simple-boundary\r\n"
        b"\r\n\r\n--\r\n--s\r\n"
    )
    body = build([("application/octet-stream", data), ("x/y", data)])
    expected = [
        ({"content-type": "application/octet-stream"}, data),
        ({"content-type": "x/y"}, data),
    ]
    for size in range(1, 40):
        assert parse_chunks(body, size) == expected


def test_body_ending_in_delimiter_prefix_across_feeds() -> None:
    parser = MultipartParser("bound")
    events = parser.feed(b"--bound\r\n\r\nabc\r\n--bou")
    assert events == [PartBegin({}), PartData(b"abc")]
    events = parser.feed(b"x")
    assert events == [PartData(b"\r\n--boux")]
    events = parser.feed(b"\r")
    assert events == []
    events = parser.feed(b"\n--bound--")
    assert events == [PartEnd()]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = MultipartParser("b")
    events = parser.feed(bytearray(b"--b\r\n\r\nab"))  # type: ignore[arg-type]
    events += parser.feed(memoryview(b"c\r\n--b--"))  # type: ignore[arg-type]
    assert all(isinstance(e.data, bytes) for e in events if isinstance(e, PartData))
    assert collapse(events) == [({}, b"abc")]


def test_empty_feed_is_harmless() -> None:
    parser = MultipartParser("b")
    assert parser.feed(b"") == []
    parser.feed(b"--b\r\n\r\nx")
    assert parser.feed(b"") == []
    parser.feed(b"\r\n--b--")
    parser.close()


def test_close_is_idempotent_when_finished() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b\r\n\r\nx\r\n--b--")
    parser.close()
    parser.close()
    assert parser.finished


def test_max_header_bytes_exactly_at_limit() -> None:
    block = b"X-A: " + b"v" * 10 + b"\r\n\r\n"
    body = b"--b\r\n" + block + b"x\r\n--b--"
    assert parse_chunks(body, 1, "b") == [({"x-a": "v" * 10}, b"x")]
    parser = MultipartParser("b", max_header_bytes=len(block))
    parser.feed(body)
    parser.close()
    message = errors(body, "b", max_header_bytes=len(block) - 1)
    assert "header block" in message
    assert f"longer than {len(block) - 1} bytes" in message


# -- malformed bodies ----------------------------------------------------------------


def test_missing_close_delimiter() -> None:
    message = errors(b"--b\r\n\r\nsome data that just stops", "b")
    assert "body ended before the closing boundary" in message
    assert "'--b--'" in message
    assert "part 1 is truncated" in message


def test_truncated_after_part_end() -> None:
    message = errors(b"--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b", "b")
    assert "body ended before the closing boundary" in message
    assert "right after a boundary delimiter" in message


def test_truncated_in_headers() -> None:
    message = errors(b"--b\r\n\r\nx\r\n--b\r\nContent-Type: appl", "b")
    assert "body ended before the closing boundary" in message
    assert "headers of part 2" in message


def test_truncated_close_delimiter() -> None:
    message = errors(b"--b\r\n\r\nx\r\n--b-", "b")
    assert "body ended before the closing boundary" in message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"just some bytes, no multipart at all",
        b"--other\r\n\r\nx\r\n--other--\r\n",
        b"- -b\r\n\r\nx",
    ],
)
def test_boundary_never_appears(body: bytes) -> None:
    message = errors(body, "b")
    assert "body ended before the closing boundary" in message
    assert "no part delimited by boundary 'b'" in message


def test_oversized_headers() -> None:
    body = b"--b\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\nx\r\n--b--"
    message = errors(body, "b")
    assert "header block of multipart part 1 is longer than 16384 bytes" in message


def test_oversized_headers_detected_while_streaming() -> None:
    parser = MultipartParser("b", max_header_bytes=100)
    parser.feed(b"--b\r\nX-A: 1\r\n")
    with pytest.raises(MalformedRequest, match="longer than 100 bytes"):
        feed_all(parser, [b"X-Filler: 0123456789\r\n"] * 100, close=False)
    # A header line that never ends must not be buffered without bound either.
    parser2 = MultipartParser("b", max_header_bytes=100)
    parser2.feed(b"--b\r\n")
    with pytest.raises(MalformedRequest, match="longer than 100 bytes"):
        feed_all(parser2, [b"a"] * 200, close=False)


def test_too_many_headers_chunked() -> None:
    body = b"--b\r\n" + b"X: y\r\n" * 5000 + b"\r\nx\r\n--b--"
    parser = MultipartParser("b")
    chunks = [body[i : i + 13] for i in range(0, len(body), 13)]
    with pytest.raises(MalformedRequest, match="longer than 16384 bytes"):
        feed_all(parser, chunks, close=False)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (b"Content-Type application/dicom", "no ':'"),
        (b"garbage", "no ':'"),
        (b": value", "an empty header name"),
    ],
)
def test_bad_header_line(line: bytes, what: str) -> None:
    message = errors(b"--b\r\nX-Ok: 1\r\n" + line + b"\r\n\r\nx\r\n--b--", "b")
    assert "multipart part 1 has a malformed header line" in message
    assert what in message
    assert repr(line.decode()) in message


def test_bad_header_line_in_later_part() -> None:
    message = errors(b"--b\r\n\r\nx\r\n--b\r\nnope\r\n\r\ny\r\n--b--", "b")
    assert "multipart part 2 has a malformed header line (no ':')" in message


def test_continuation_line_first() -> None:
    message = errors(b"--b\r\n  folded: x\r\n\r\nx\r\n--b--", "b")
    assert "continuation line" in message


@pytest.mark.parametrize(
    "after",
    [b"x\r\n", b"-x", b"  x", b"\rx", b"\t-\r\n", b"b\r\n", b"\x00"],
)
def test_garbage_after_delimiter(after: bytes) -> None:
    message = errors(b"--b\r\n\r\nx\r\n--b" + after + b"\r\n\r\ny\r\n--b--", "b")
    assert "boundary delimiter '--b' must be followed by CRLF or '--'" in message


def test_garbage_after_first_delimiter() -> None:
    message = errors(b"preamble\r\n--bx\r\n\r\nx\r\n--b--", "b")
    assert "must be followed by CRLF or '--', but is followed by b'x" in message


def test_garbage_after_delimiter_split_across_feeds() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b\r\n\r\nx\r\n--b")
    assert parser.feed(b"  ") == []
    assert parser.feed(b"\r") == []
    with pytest.raises(MalformedRequest, match="must be followed by CRLF or '--'"):
        parser.feed(b"?")


def test_endless_padding() -> None:
    parser = MultipartParser("b", max_header_bytes=50)
    parser.feed(b"--b")
    with pytest.raises(MalformedRequest, match="more than 50 bytes of whitespace"):
        feed_all(parser, [b" " * 10] * 10, close=False)


def test_parser_stays_failed() -> None:
    parser = MultipartParser("b")
    with pytest.raises(MalformedRequest) as first:
        parser.feed(b"--b\r\nbroken\r\n\r\n")
    with pytest.raises(MalformedRequest) as again:
        parser.feed(b"x\r\n--b--")
    assert again.value.message == first.value.message
    with pytest.raises(MalformedRequest):
        parser.close()
    assert not parser.finished


def test_close_failure_repeats() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b\r\n\r\nx")
    with pytest.raises(MalformedRequest, match="before the closing boundary"):
        parser.close()
    with pytest.raises(MalformedRequest, match="before the closing boundary"):
        parser.close()


@pytest.mark.parametrize(
    ("boundary", "reason"),
    [
        ("", "empty"),
        ("x" * 71, "at most 70"),
        ("ends with space ", "must not end with a space"),
        ("semi;colon", "';'"),
        ('quo"te', "'\"'"),
        ("new\r\nline", "not allowed"),
        ("tab\there", "not allowed"),
        ("caf\xe9", "not allowed"),
        ("star*", "not allowed"),
    ],
)
def test_invalid_boundary(boundary: str, reason: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        MultipartParser(boundary)
    assert "invalid multipart boundary" in info.value.message
    assert reason in info.value.message


# -- response helpers ----------------------------------------------------------------


def test_make_boundary_is_legal_and_random() -> None:
    boundaries = {make_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for boundary in boundaries:
        assert re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]", boundary)
        MultipartParser(boundary)


def test_framing_bytes() -> None:
    assert part_header("b", "application/dicom") == (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n"
    )
    assert part_header("b", "text/plain", {"Content-Location": "/x", "X-N": "1"}) == (
        b"--b\r\nContent-Type: text/plain\r\nContent-Location: /x\r\nX-N: 1\r\n\r\n"
    )
    assert part_separator() == b"\r\n"
    assert closing_delimiter("b") == b"\r\n--b--\r\n"


@pytest.mark.parametrize(
    ("content_type", "extra"),
    [
        ("text/plain\r\nX-Injected: 1", None),
        ("text/plain", {"X-A": "1\r\n\r\nbody"}),
        ("text/plain", {"X-A\n": "1"}),
        ("text/plain", {"X:A": "1"}),
        ("text/plain", {"": "1"}),
        ("text/\u20ac", None),
    ],
)
def test_part_header_refuses_broken_headers(
    content_type: str, extra: dict[str, str] | None
) -> None:
    with pytest.raises(ValueError):
        part_header("b", content_type, extra)


def test_round_trip() -> None:
    rng = random.Random(99)
    boundary = make_boundary()
    bodies = [rng.randbytes(rng.randint(0, 5000)) for _ in range(30)]
    bodies += [b"", b"\r\n", b"x--" + boundary.encode(), b"\r\n--" + boundary.encode()[:-1]]
    pieces: list[bytes] = []
    for number, data in enumerate(bodies):
        if number:
            pieces.append(part_separator())
        pieces.append(
            part_header(
                boundary,
                'application/dicom; transfer-syntax="1.2.840.10008.1.2.1"',
                {"Content-Location": f"/studies/1/series/2/instances/{number}"},
            )
        )
        pieces.append(data)
    pieces.append(closing_delimiter(boundary))
    parser = MultipartParser(boundary)
    events: list[Event] = []
    # Feed the pieces exactly as a streaming response would write them.
    for piece in pieces:
        events += parser.feed(piece)
    parser.close()
    parsed = collapse(events)
    assert [data for _, data in parsed] == bodies
    assert parsed[3][0] == {
        "content-type": 'application/dicom; transfer-syntax="1.2.840.10008.1.2.1"',
        "content-location": "/studies/1/series/2/instances/3",
    }
    whole = b"".join(pieces)
    assert parse_chunks(whole, random_splits(whole, rng, 100), boundary) == parsed


def outcome(body: bytes, sizes: list[int], boundary: str) -> tuple[list[Part], bool] | str:
    """Parts and whether the close delimiter was seen, or the error message."""
    parser = MultipartParser(boundary, max_header_bytes=40)
    events: list[Event] = []
    pos = 0
    try:
        for size in sizes:
            events += parser.feed(body[pos : pos + size])
            pos += size
        parser.close()
    except MalformedRequest as exc:
        # How many garbage bytes the message quotes depends on what had arrived.
        return exc.message.split(", but is followed by")[0]
    return collapse(events), parser.finished


def test_fuzz_chunking_never_changes_the_outcome() -> None:
    # Bodies made of delimiter fragments hit every state boundary; whatever the parser
    # decides for the whole body, it must decide the same for any split of it.
    rng = random.Random(1234)
    pieces = [b"\r\n", b"\n", b"\r", b"--", b"-", b"b", b"bb", b"x", b" ", b":", b"A: 1\r\n"]
    outcomes: set[str] = set()
    for _ in range(3000):
        boundary = rng.choice(["b", "bb", "b b"])
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            body = b"--" + boundary.encode() + b"\r\n" + body
        if rng.random() < 0.5:
            body += b"\r\n--" + boundary.encode() + b"--"
        whole = outcome(body, [len(body)], boundary)
        outcomes.add(whole.split(":")[0] if isinstance(whole, str) else "parsed")
        for _ in range(3):
            assert outcome(body, random_splits(body, rng, 4), boundary) == whole, body
    # The generator must actually reach both successes and the various failures.
    assert "parsed" in outcomes
    assert len(outcomes) >= 5
