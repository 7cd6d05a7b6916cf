"""Media types: parsing Content-Type and Accept, and negotiating what to send.

Parameters may be quoted or not (``type="application/dicom"`` and
``type=application/dicom`` are the same); quoted strings may contain ``,`` and ``;``.
Accept entries are ranked by q-value, then by their order in the header.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from service.errors import MalformedRequest, NotAcceptable

__all__ = [
    "DICOM",
    "DICOM_JSON",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "MULTIPART_RELATED",
    "InstanceChoice",
    "MediaType",
    "choose_instance_media",
    "choose_json",
    "parse_accept",
    "parse_media_type",
]

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MULTIPART_RELATED = "multipart/related"
#: PS3.18 §8.7.3.5.2: the transfer syntax of application/dicom when none is asked for.
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

_TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class MediaType(msgspec.Struct, frozen=True):
    """A parsed media type: ``type`` is lower-case ``type/subtype``; parameter names are
    lower-case, values as sent (unquoted)."""

    type: str
    params: dict[str, str]
    q: float = 1.0

    def matches(self, other: str) -> bool:
        """Whether this (possibly wildcard) range covers the concrete type ``other``."""
        if self.type in ("*/*", other):
            return True
        major, _, minor = self.type.partition("/")
        return minor == "*" and other.startswith(major + "/")


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise MalformedRequest(f"unterminated quoted string in {value!r}")
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, escaped = [], False
        for ch in value[1:-1]:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_media_type(value: str) -> MediaType:
    """Parse one media type with parameters; raise 400 on syntax errors."""
    pieces = _split(value, ";")
    full = pieces[0].strip().lower()
    major, slash, minor = full.partition("/")
    if not slash or not major or not minor or not set(major + minor) <= _TOKEN:
        raise MalformedRequest(f"{value.strip()!r} is not a media type (type/subtype)")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        name, eq, raw = piece.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise MalformedRequest(f"parameter {piece.strip()!r} of {full} has no value")
        param = _unquote(raw.strip())
        if name == "q":
            try:
                q = float(param)
            except ValueError:
                raise MalformedRequest(f"q-value {param!r} of {full} is not a number") from None
            if not 0.0 <= q <= 1.0:
                raise MalformedRequest(f"q-value {param!r} of {full} is outside 0..1")
        else:
            params[name] = param
    return MediaType(full, params, q)


def parse_accept(value: str | None) -> list[MediaType]:
    """Accept entries, best first; an absent or empty header accepts anything."""
    if value is None or not value.strip():
        return [MediaType("*/*", {})]
    entries = [parse_media_type(p) for p in _split(value, ",") if p.strip()]
    ranked = sorted(enumerate(entries), key=lambda pair: (-pair[1].q, pair[0]))
    return [media for _, media in ranked if media.q > 0]


class InstanceChoice(msgspec.Struct, frozen=True):
    """How to send DICOM instances: multipart or a single part, in which syntax
    (``"*"``: each instance as stored; else instances stored otherwise are
    transcoded)."""

    multipart: bool
    transfer_syntax: str


def choose_instance_media(
    accept: str | None,
    stored_syntaxes: set[str],
    *,
    single_part_ok: bool,
    can_transcode: Callable[[str, str], bool] | None = None,
) -> InstanceChoice:
    """Pick the first acceptable way to send instances stored in ``stored_syntaxes``.

    A syntax is acceptable if every instance is stored in it or
    ``can_transcode(stored, syntax)``; ``transfer-syntax=*`` takes them as stored.
    """
    refusals: list[str] = []
    for media in parse_accept(accept):
        if media.matches(MULTIPART_RELATED) and media.type != "*/*":
            part_type = media.params.get("type", DICOM).lower()
            if part_type != DICOM:
                refusals.append(f"multipart/related; type={part_type} is not offered here")
                continue
            multipart = True
        elif media.type == "*/*":
            multipart = True
        elif media.matches(DICOM):
            if not single_part_ok:
                refusals.append(
                    "application/dicom (single part) holds one instance; ask for "
                    'multipart/related; type="application/dicom"'
                )
                continue
            multipart = False
        else:
            refusals.append(f"{media.type} is not offered for DICOM instances")
            continue
        syntax = media.params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
        if syntax == "*" or all(
            s == syntax or (can_transcode is not None and can_transcode(s, syntax))
            for s in stored_syntaxes
        ):
            return InstanceChoice(multipart, syntax)
        refusals.append(
            f"transfer syntax {syntax} was asked for, but the instances are stored as "
            f"{', '.join(sorted(stored_syntaxes))} and cannot be transcoded to it here; "
            "ask with transfer-syntax=* to receive them as stored"
        )
    raise NotAcceptable("no acceptable representation: " + "; ".join(refusals))


def choose_json(accept: str | None) -> None:
    """Raise 406 unless the client accepts DICOM JSON."""
    for media in parse_accept(accept):
        if media.matches(DICOM_JSON) or media.type == "application/json":
            return
    raise NotAcceptable(f"metadata is offered as {DICOM_JSON} only (Accept was {accept!r})")
