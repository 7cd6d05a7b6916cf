"""Conditional requests and content coding: If-None-Match (RFC 9110 §13.1.2) and
Accept-Encoding (RFC 9110 §12.5.3), as far as the metadata documents need them."""

from __future__ import annotations

__all__ = ["accepts_gzip", "etag_matches"]


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, as GET uses)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    want = _opaque(etag)
    return any(_opaque(tag) == want for tag in if_none_match.split(","))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether the client takes a gzip-coded body (``gzip`` or ``*`` with q above 0)."""
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False
