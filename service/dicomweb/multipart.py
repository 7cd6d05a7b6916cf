"""``multipart/related`` bodies (RFC 2046 §5.1, RFC 2387): a push parser for requests and
the framing bytes for responses.

:class:`MultipartParser` reads a request body as it arrives.  Feed it chunks of any size
(one byte up to many MiB, split anywhere, boundaries included); it returns
:class:`PartBegin` / :class:`PartData` / :class:`PartEnd` events in order.  What it
promises:

* Part bodies are delivered byte for byte.  Bytes that merely resemble a delimiter
  (``"\\r\\n--"`` plus part of the boundary, or the boundary without the CRLF before it)
  are body bytes.  The one exception follows the RFC grammar (``body-part :=
  MIME-part-headers [CRLF *OCTET]``): a part may leave out its body section, so
  ``--boundary`` right after the CRLF CRLF that ends a header block is the next
  delimiter, and the part is empty.
* Memory stays bounded whatever the part size: at most one header block
  (``max_header_bytes``) or ``len(delimiter) - 1`` bytes are held between calls; all
  other body bytes are handed back from the same ``feed()`` call that received them,
  usually as the very ``bytes`` object passed in (no copy).
* :class:`PartEnd` is emitted only once the delimiter that ends the part has been seen
  *and* checked (followed by CRLF or ``--``), so a consumer may commit a part on it.
* The preamble (before the first delimiter) and the epilogue (after the close delimiter
  ``--boundary--``) are ignored, as RFC 2046 requires.
* A malformed body raises :class:`~service.errors.MalformedRequest` (HTTP 400) with a
  message that says what is wrong.  Events produced earlier in the same ``feed()`` call
  are discarded; the parser then stays failed and raises again on any further call.

Leniency, on purpose: header lines (including the line ending the boundary line) may end
in a bare LF instead of CRLF, because sloppy clients (hand-written curl scripts) send
that and the header block is unambiguous either way.  The delimiter that ends a part
body is never relaxed: it must be CRLF ``--boundary``, otherwise a LF inside binary data
could end a part early.  Header values are decoded as Latin-1 (never fails, keeps every
byte); folded header lines are joined with a single space.

The response helpers frame parts without ever joining bodies::

    part_header(b, ct1)  body1  part_separator()  part_header(b, ct2)  body2
    ...  closing_delimiter(b)

Each piece can be written (or yielded from a streaming response) on its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeAlias

from service.errors import MalformedRequest

__all__ = [
    "Event",
    "MultipartParser",
    "PartBegin",
    "PartData",
    "PartEnd",
    "closing_delimiter",
    "make_boundary",
    "part_header",
    "part_separator",
]


@dataclass(slots=True)
class PartBegin:
    """A new part started.  ``headers``: names lower-cased, values stripped; for a name
    given twice the last value wins.  A part without headers has ``{}``."""

    headers: dict[str, str]


@dataclass(slots=True)
class PartData:
    """Some bytes of the current part's body; never empty."""

    data: bytes


@dataclass(slots=True)
class PartEnd:
    """The current part's body is complete and its closing delimiter is well formed."""


Event: TypeAlias = PartBegin | PartData | PartEnd

# RFC 2046 §5.1.1 bcharsnospace; a space is allowed too, except as the last character.
_BCHARS_NOSPACE = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"
)
_MAX_BOUNDARY = 70

_CR = 0x0D
_LF = 0x0A
_DASH = 0x2D
_SP = 0x20
_HT = 0x09

# Parser states.
_PREAMBLE = 0  # before the first delimiter
_AFTER_DELIMITER = 1  # just past "--boundary": padding, then CRLF or "--"
_HEADERS = 2  # inside a part's header block
_BODY_START = 3  # just past a header block that ended in CRLF CRLF
_BODY = 4  # inside a part's body
_DONE = 5  # close delimiter seen; the rest is epilogue


def _check_boundary(boundary: str) -> None:
    if not boundary:
        raise MalformedRequest("invalid multipart boundary: it is empty")
    if len(boundary) > _MAX_BOUNDARY:
        raise MalformedRequest(
            f"invalid multipart boundary {boundary!r}: it is {len(boundary)} characters "
            f"long, RFC 2046 allows at most {_MAX_BOUNDARY}"
        )
    bad = sorted({ch for ch in boundary if ch not in _BCHARS_NOSPACE and ch != " "})
    if bad:
        raise MalformedRequest(
            f"invalid multipart boundary {boundary!r}: character(s) "
            f"{''.join(bad)!r} are not allowed by RFC 2046"
        )
    if boundary.endswith(" "):
        raise MalformedRequest(
            f"invalid multipart boundary {boundary!r}: it must not end with a space"
        )


class MultipartParser:
    """Incremental parser of one ``multipart/related`` body with the given boundary
    (the unquoted ``boundary`` parameter of the request's Content-Type).

    Call :meth:`feed` with each chunk as it arrives and :meth:`close` once the body has
    ended; see the module docstring for the guarantees.
    """

    __slots__ = (
        "_boundary",
        "_buf",
        "_delimiter",
        "_error",
        "_header_scan",
        "_in_part",
        "_max_header_bytes",
        "_opener",
        "_parts",
        "_state",
    )

    def __init__(self, boundary: str, *, max_header_bytes: int = 16384) -> None:
        _check_boundary(boundary)
        self._boundary = boundary
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._opener = self._delimiter[2:]
        self._max_header_bytes = max_header_bytes
        # A virtual CRLF lets the first delimiter sit at the very start of the body
        # (RFC 2046 allows that) while every delimiter is still searched as CRLF--b.
        self._buf = b"\r\n"
        self._state = _PREAMBLE
        # Offset from the start of the header block up to which lines were examined,
        # so headers arriving a byte at a time are not re-scanned.
        self._header_scan = 0
        self._in_part = False  # whether a delimiter ends a part (False: the first one)
        self._parts = 0  # parts begun so far, for messages
        self._error: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the close delimiter ``--boundary--`` has been seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next chunk of the body; return the events it completes, in order."""
        if self._error is not None:
            raise MalformedRequest(self._error)
        if self._state == _DONE or not data:
            return []
        if not isinstance(data, bytes):
            data = bytes(data)
        buf = self._buf + data if self._buf else data
        events: list[Event] = []
        try:
            pos = self._parse(buf, events)
        except MalformedRequest as exc:
            self._error = exc.message
            self._buf = b""
            raise
        self._buf = buf[pos:] if self._state != _DONE else b""
        return events

    def close(self) -> None:
        """Declare the end of the body; raise 400 unless the close delimiter was seen."""
        if self._error is not None:
            raise MalformedRequest(self._error)
        if self._state == _DONE:
            return
        closing = f"--{self._boundary}--"
        if self._state == _PREAMBLE:
            where = (
                f"no part delimited by boundary {self._boundary!r} was found (does the "
                "boundary parameter of Content-Type match the body?)"
            )
        elif self._state in (_BODY, _BODY_START):
            where = f"part {self._parts} is truncated"
        elif self._state == _HEADERS:
            where = f"it stopped inside the headers of part {self._parts}"
        else:
            where = "it stopped right after a boundary delimiter"
        self._error = f"multipart body ended before the closing boundary {closing!r}: {where}"
        raise MalformedRequest(self._error)

    # -- internals ---------------------------------------------------------------------

    def _parse(self, buf: bytes, events: list[Event]) -> int:
        """Consume ``buf`` as far as possible; return the offset of the first byte that
        must be kept for the next call."""
        delimiter = self._delimiter
        pos = 0
        while True:
            state = self._state
            if state == _BODY:
                found = buf.find(delimiter, pos)
                if found < 0:
                    hold = self._hold_from(buf, pos)
                    if hold > pos:
                        # For a chunk wholly inside a body this slice is buf itself.
                        events.append(PartData(buf[pos:hold]))
                    return hold
                if found > pos:
                    events.append(PartData(buf[pos:found]))
                pos = found + len(delimiter)
                self._state = _AFTER_DELIMITER
            elif state == _HEADERS:
                end = self._header_end(buf, pos)
                if end < 0:
                    return pos
                events.append(PartBegin(self._parse_headers(buf[pos:end])))
                # Only a CRLF empty line can double as a delimiter's CRLF.
                crlf = end - pos >= 2 and buf[end - 2] == _CR
                self._state = _BODY_START if crlf else _BODY
                pos = end
            elif state == _BODY_START:
                # RFC 2046: body-part := MIME-part-headers [CRLF *OCTET].  When the
                # optional body section is left out, the CRLF just read as the empty
                # line belongs to the next delimiter: "--boundary" follows directly.
                opener = self._opener
                if len(buf) - pos < len(opener) and opener.startswith(buf[pos:]):
                    return pos
                if buf.startswith(opener, pos):
                    pos += len(opener)
                    self._state = _AFTER_DELIMITER
                else:
                    self._state = _BODY
            elif state == _AFTER_DELIMITER:
                after = self._after_delimiter(buf, pos)
                if after < 0:
                    return pos
                if self._in_part:
                    events.append(PartEnd())
                if self._state == _DONE:
                    return len(buf)
                self._in_part = True
                self._parts += 1
                self._header_scan = 0
                self._state = _HEADERS
                pos = after
            elif state == _PREAMBLE:
                found = buf.find(delimiter, pos)
                if found < 0:
                    return self._hold_from(buf, pos)
                pos = found + len(delimiter)
                self._state = _AFTER_DELIMITER
            else:  # _DONE: the rest is epilogue
                return len(buf)

    def _hold_from(self, buf: bytes, pos: int) -> int:
        """Where the longest suffix of ``buf[pos:]`` that could start a delimiter begins
        (``len(buf)`` if none), given that no whole delimiter is in ``buf[pos:]``."""
        end = len(buf)
        # Every delimiter prefix starts with the delimiter's only CR, so the one candidate
        # is the suffix from the last CR in the final len(delimiter) - 1 bytes.
        cr = buf.rfind(b"\r", max(pos, end - len(self._delimiter) + 1))
        if cr >= 0 and self._delimiter.startswith(buf[cr:]):
            return cr
        return end

    def _after_delimiter(self, buf: bytes, pos: int) -> int:
        """Check what follows a delimiter: transport padding, then CRLF (another part
        follows; return where its headers start) or ``--`` (the close delimiter; state
        becomes done).  Return -1 if more bytes are needed."""
        end = len(buf)
        i = pos
        # Padding is almost always absent, so a byte loop is cheap here.
        while i < end and buf[i] in (_SP, _HT):
            i += 1
        if i - pos > self._max_header_bytes:
            raise MalformedRequest(
                f"multipart boundary delimiter '--{self._boundary}' is followed by more "
                f"than {self._max_header_bytes} bytes of whitespace"
            )
        if i == end:
            return -1
        first = buf[i]
        if first == _LF:  # tolerated bare LF, see module docstring
            return i + 1
        if first in (_CR, _DASH):
            if i + 1 == end:
                return -1
            second = buf[i + 1]
            if first == _CR and second == _LF:
                return i + 2
            if first == _DASH and second == _DASH:
                self._state = _DONE
                return end
        raise MalformedRequest(
            f"multipart boundary delimiter '--{self._boundary}' must be followed by CRLF "
            f"or '--', but is followed by {bytes(buf[i : i + 16])!r}"
        )

    def _header_end(self, buf: bytes, start: int) -> int:
        """Offset just past the empty line ending the header block that starts at
        ``start``, or -1 if it has not arrived yet."""
        limit = self._max_header_bytes
        line = start + self._header_scan
        while True:
            newline = buf.find(b"\n", line)
            if newline < 0:
                self._header_scan = line - start
                if len(buf) - start > limit:
                    self._too_long()
                return -1
            if newline + 1 - start > limit:
                self._too_long()
            if newline == line or (newline == line + 1 and buf[line] == _CR):
                return newline + 1
            line = newline + 1

    def _too_long(self) -> None:
        raise MalformedRequest(
            f"the header block of multipart part {self._parts} is longer than "
            f"{self._max_header_bytes} bytes"
        )

    def _parse_headers(self, block: bytes) -> dict[str, str]:
        """Header lines of a block that ends with its terminating empty line."""
        headers: dict[str, str] = {}
        name: str | None = None
        value = ""
        # The last element is the empty terminating line (plus "" after its LF).
        lines = block.decode("latin-1").split("\n")[:-2]
        for raw in lines:
            line = raw[:-1] if raw.endswith("\r") else raw
            if line[:1] in (" ", "\t"):
                # obs-fold (RFC 5322 §2.2.3): continues the previous header's value.
                if name is None:
                    raise MalformedRequest(
                        f"multipart part {self._parts} starts its headers with a "
                        f"continuation line: {line!r}"
                    )
                value = f"{value} {line.strip()}" if value else line.strip()
                continue
            if name is not None:
                headers[name] = value
            field, colon, rest = line.partition(":")
            field = field.strip().lower()
            if not colon or not field:
                what = "no ':'" if not colon else "an empty header name"
                raise MalformedRequest(
                    f"multipart part {self._parts} has a malformed header line ({what}): "
                    f"{line[:200]!r}"
                )
            name, value = field, rest.strip()
        if name is not None:
            headers[name] = value
        return headers


# -- response side ---------------------------------------------------------------------


def make_boundary() -> str:
    """A fresh random boundary for a response: 32 hex digits, legal per RFC 2046 and
    (being random) practically never found inside a part body."""
    return uuid.uuid4().hex


def _header_text(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError(f"{what} contains a line break: {text!r}")
    return text


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    """The delimiter and header block that open a part:
    ``--boundary CRLF Content-Type: ... CRLF [Name: value CRLF]... CRLF``.

    Send it, then the part's body.  Before the header of every part but the first, send
    :func:`part_separator`; after the last body, :func:`closing_delimiter`.  Raises
    ValueError for header text that could break the framing (line breaks, or a ':' in a
    header name) or is not Latin-1.
    """
    lines = [f"--{boundary}", f"Content-Type: {_header_text(content_type, 'Content-Type')}"]
    for name, value in (extra or {}).items():
        if not name or ":" in name:
            raise ValueError(f"invalid header name {name!r}")
        lines.append(f"{_header_text(name, 'header name')}: {_header_text(value, name)}")
    lines.extend(("", ""))
    return "\r\n".join(lines).encode("latin-1")


def part_separator() -> bytes:
    """The CRLF that ends one part's body before the next :func:`part_header`.

    (RFC 2046 counts it as part of the next delimiter; it is not body data.)
    """
    return b"\r\n"


def closing_delimiter(boundary: str) -> bytes:
    """What follows the last part's body: ``CRLF --boundary-- CRLF``.

    It already starts with the CRLF that ends that body, so no :func:`part_separator`
    goes before it.
    """
    return f"\r\n--{boundary}--\r\n".encode("latin-1")
