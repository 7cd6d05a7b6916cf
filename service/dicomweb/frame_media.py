"""Accept negotiation for frames (PS3.18 §8.7.3.3, Table 8.7.3-5).

A frame can be sent as stored (``application/octet-stream`` for native pixel data,
``image/jpeg``, ``image/jls``, ``image/jp2``, ``image/dicom-rle``, ... for
encapsulated pixel data) or decoded to native Explicit VR Little Endian bytes
(``application/octet-stream``). Rules:

* ``multipart/related; type=X`` asks for parts of media type ``X`` (default
  ``application/octet-stream``); a bare ``X`` asks for a single-part body, which the
  standard allows only when one frame is requested.
* ``transfer-syntax=UID`` asks for that syntax; without it, the media type's default
  syntax (Table 8.7.3-5; octet-stream: Explicit VR Little Endian) is meant;
  ``transfer-syntax=*`` accepts frames as stored, whatever their media type, when
  ``X`` is ``application/octet-stream`` or covers the stored type.
* ``*/*`` (or no Accept) is the default: multipart octet-stream, Explicit VR Little
  Endian.
* Entries are tried by q-value, then order; when none can be met the answer is 406
  listing why each was refused.
"""

from __future__ import annotations

import msgspec

from service.dicom.frames import (
    DEFAULT_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_LITTLE_ENDIAN,
    OCTET_STREAM,
    frame_media_type,
)
from service.dicomweb.media import MULTIPART_RELATED, MediaType, parse_accept
from service.errors import NotAcceptable

__all__ = ["FrameChoice", "choose_frame_media"]

_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


class FrameChoice(msgspec.Struct, frozen=True):
    """How to send frames: multipart or single part, media type and syntax of each
    frame, and whether they are decoded (else sent as stored)."""

    multipart: bool
    media_type: str
    transfer_syntax: str
    decode: bool


def choose_frame_media(
    accept: str | None,
    *,
    stored_syntax: str,
    servable: bool,
    decodable: bool,
    frame_count: int,
) -> FrameChoice:
    """The first acceptable way to send ``frame_count`` frames of an instance stored in
    ``stored_syntax`` (``servable``: its frames can be sent as stored; ``decodable``:
    they can be decoded to native bytes)."""
    stored_media = frame_media_type(stored_syntax)
    native = stored_syntax in NATIVE_LITTLE_ENDIAN and servable

    def as_stored(multipart: bool) -> FrameChoice:
        return FrameChoice(multipart, stored_media, stored_syntax, False)

    def uncompressed(multipart: bool) -> FrameChoice | None:
        if native:
            return FrameChoice(multipart, OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, False)
        if decodable:
            return FrameChoice(multipart, OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, True)
        return None

    refusals: list[str] = []
    for media in parse_accept(accept):
        if media.type == "*/*":
            multipart, part = True, MediaType("*/*", {})
        elif media.type == MULTIPART_RELATED:
            multipart = True
            part = MediaType(media.params.get("type", OCTET_STREAM).strip().lower(), {})
        elif media.matches(MULTIPART_RELATED):  # multipart/*
            multipart, part = True, MediaType(OCTET_STREAM, {})
        else:
            multipart, part = False, media
            if frame_count > 1:
                refusals.append(
                    f"{media.type} (single part) holds one frame, {frame_count} were "
                    f'asked for; ask for multipart/related; type="{media.type}"'
                )
                continue
        part_type = _ALIASES.get(part.type, part.type)
        part = MediaType(part_type, {})
        syntax = media.params.get("transfer-syntax")
        choice: FrameChoice | None = None
        if syntax == "*":
            if servable and (part.matches(stored_media) or part_type == OCTET_STREAM):
                choice = as_stored(multipart)
            elif part.matches(OCTET_STREAM):
                choice = uncompressed(multipart)
        elif syntax is None and "*" in part_type:
            # A wildcard means the default (uncompressed) when it covers it, else the
            # stored form if it covers that.
            if part.matches(OCTET_STREAM):
                choice = uncompressed(multipart)
            if choice is None and servable and part.matches(stored_media):
                choice = as_stored(multipart)
        else:
            syntax = syntax or DEFAULT_SYNTAX.get(part_type)
            if syntax is None:
                refusals.append(f"{part_type} is not offered for frames")
                continue
            if part_type == OCTET_STREAM and syntax == EXPLICIT_VR_LITTLE_ENDIAN:
                choice = uncompressed(multipart)
            elif servable and syntax == stored_syntax and part_type == stored_media:
                choice = as_stored(multipart)
        if choice is not None:
            return choice
        refusals.append(_refusal(part_type, syntax, stored_syntax, servable, decodable))
    raise NotAcceptable("no acceptable representation of the frames: " + "; ".join(refusals))


def _refusal(
    part_type: str, syntax: str | None, stored: str, servable: bool, decodable: bool
) -> str:
    asked = f"{part_type}" + (f" in {syntax}" if syntax else "")
    offers = []
    if servable:
        offers.append(f"{frame_media_type(stored)} in {stored} (as stored)")
    if decodable or (stored in NATIVE_LITTLE_ENDIAN and servable):
        offers.append(f"{OCTET_STREAM} in {EXPLICIT_VR_LITTLE_ENDIAN}")
    offered = " or ".join(offers) if offers else "nothing (its pixel data cannot be decoded here)"
    return f"{asked} cannot be produced: the frames are offered as {offered}"
