"""Files sent without the Part 10 preamble.

PS3.10 files start with a 128-byte preamble and ``DICM``. Some writers leave both out
and start with the File Meta group (pydicom's ``dcmwrite`` does unless told to enforce
the file format, so the ``dicomweb-client`` package sends such files). We accept them
and store them with a zeroed preamble and ``DICM`` prepended, so that every stored file
is a valid Part 10 file; every byte that was sent is kept, after the prefix.
"""

from __future__ import annotations

__all__ = ["PREFIX", "PREFIX_LENGTH", "missing_preamble"]

PREFIX = b"\x00" * 128 + b"DICM"
PREFIX_LENGTH = len(PREFIX)


def missing_preamble(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a part, at least :data:`PREFIX_LENGTH` of
    them unless the part is shorter) starts with File Meta instead of a preamble."""
    if head[128:132] == b"DICM":
        return False
    # (0002,gggg) in little endian, then an explicit two-letter VR: File Meta.
    return len(head) >= 8 and head[0:2] == b"\x02\x00" and head[4:6].isalpha()
