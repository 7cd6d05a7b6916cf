"""The query parameters and Accept values of the rendered resources (PS3.18 §8.3.5.1):
``window``, ``viewport``, ``quality``, frame lists, and the image media types.

Every malformed value is a 400 whose detail starts with the parameter's name.
"""

from __future__ import annotations

import re

from service.dicomweb.media import parse_accept
from service.errors import MalformedRequest, NotAcceptable
from service.imaging.render import JPEG, MEDIA_TYPES, Viewport, Window

__all__ = [
    "MAX_VIEWPORT",
    "choose_image",
    "parse_quality",
    "parse_viewport",
    "parse_window",
]

#: Largest viewport side accepted, so that one request cannot ask for a huge picture.
MAX_VIEWPORT = 4096
_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
# ASCII digits only: str.isdigit() also takes superscripts, which int() refuses.
_UNSIGNED = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[+-]?[0-9]+")


def parse_quality(value: str | None) -> int:
    if value is None:
        return 90
    if not _UNSIGNED.fullmatch(value.strip()) or not 1 <= int(value) <= 100:
        raise MalformedRequest(f"quality must be an integer from 1 to 100, not {value!r}")
    return int(value)


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise MalformedRequest(f"window: {what} {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise MalformedRequest(f"window: {what} {value!r} is not a finite number")
    return number


def parse_window(value: str | None) -> Window | None:
    """``window=center,width[,function]``; function linear (default), linear-exact or
    sigmoid (PS3.18 §8.3.5.1.3)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if len(items) not in (2, 3):
        raise MalformedRequest(f"window must be center,width[,function], not {value!r}")
    center, width = _number(items[0], "center"), _number(items[1], "width")
    function = items[2].lower() if len(items) == 3 else "linear"
    if function not in _FUNCTIONS:
        raise MalformedRequest(
            f"window: function {items[2]!r} is not one of {', '.join(_FUNCTIONS)}"
        )
    if function == "linear" and width < 1:
        raise MalformedRequest(f"window: width {items[1]} must be at least 1 for linear")
    if width <= 0:
        raise MalformedRequest(f"window: width {items[1]} must be greater than 0")
    return Window(center, width, function)  # type: ignore[arg-type]


def _integer(value: str, what: str) -> int:
    text = value.strip()
    if not _SIGNED.fullmatch(text):
        raise MalformedRequest(f"viewport: {what} {value!r} is not an integer")
    return int(text)


def parse_viewport(value: str | None) -> Viewport | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]``; source fields may be left empty for their
    defaults; a negative sw or sh flips the picture on that axis."""
    if value is None:
        return None
    items = value.split(",")
    if len(items) not in (2, 6):
        raise MalformedRequest(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {value!r}")
    vw, vh = _integer(items[0], "vw"), _integer(items[1], "vh")
    for side, name in ((vw, "vw"), (vh, "vh")):
        if not 1 <= side <= MAX_VIEWPORT:
            raise MalformedRequest(f"viewport: {name} must be from 1 to {MAX_VIEWPORT}, not {side}")
    if len(items) == 2:
        return Viewport(vw, vh)
    sx, sy, sw, sh = (
        _integer(item, name) if item.strip() else None
        for item, name in zip(items[2:], ("sx", "sy", "sw", "sh"), strict=True)
    )
    for number, name in ((sx, "sx"), (sy, "sy")):
        if number is not None and number < 0:
            raise MalformedRequest(f"viewport: {name} must not be negative, not {number}")
    for number, name in ((sw, "sw"), (sh, "sh")):
        if number == 0:
            raise MalformedRequest(f"viewport: {name} must not be 0")
    return Viewport(vw, vh, sx, sy, sw, sh)


def choose_image(accept: str | None, *, several: bool) -> tuple[str, bool]:
    """(media type, as multipart) for ``Accept``: image/jpeg (the default) or image/png,
    alone or as the parts of multipart/related. ``*/*`` (or no Accept) gets multipart
    when the resource holds ``several`` pictures; an image type (``image/png``,
    ``image/*``) always gets a single picture, since that is all it can carry."""
    refusals = []
    for media in parse_accept(accept):
        if media.type == "*/*":
            return JPEG, several
        if media.type == "image/*":
            return JPEG, False
        if media.type in MEDIA_TYPES:
            return media.type, False
        if media.type == "multipart/related":
            part = media.params.get("type", JPEG).lower()
            if part in MEDIA_TYPES:
                return part, True
            refusals.append(f"multipart/related; type={part}")
        else:
            refusals.append(media.type)
    raise NotAcceptable(
        f"rendered images are offered as {' or '.join(MEDIA_TYPES)} (or multipart/related "
        f"of them); not as {', '.join(refusals)}"
    )
