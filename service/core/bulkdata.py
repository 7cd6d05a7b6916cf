"""Bulk data retrieval (PS3.18 §10.4.1.1.5): the value behind a BulkDataURI.

The metadata names bulk values by a tag path (``7FE00010``, or
``00540016/0/00181072/1/0009A001`` inside sequences, as :mod:`service.dicom.dicomjson`
writes them). To find a value, the stored instance's header is parsed by pydicom
through :class:`_BlobFile`, a read-only file over ranged storage reads: pydicom skips
large values (``defer_size``) instead of reading them, so locating a value costs a few
small reads wherever the instance is stored, and a large top-level value (an
encapsulated PDF, native pixel data) is then streamed from storage as a byte range,
never loaded. Values inside sequences come from the parsed sequence itself.

Values are returned in little endian byte order, as PS3.18 requires of
``application/octet-stream`` bulk data; the rare big endian instance is swapped.
"""

from __future__ import annotations

import io
import re
from array import array
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.from_thread
import msgspec
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from service.dicom.part10 import DEFLATED_TRANSFER_SYNTAXES
from service.errors import MalformedRequest, NotFound
from service.index.base import InstanceRef
from service.storage.base import BlobStore

__all__ = ["BulkValue", "locate", "parse_path", "stream"]

_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*")
#: Values up to this size are read while parsing; larger ones are located, not read.
_DEFER = 64 * 1024
_BLOCK = 64 * 1024
#: Word sizes of the VRs whose bytes depend on the byte order.
_SWAP = {"OW": "H", "US": "H", "SS": "h", "OL": "L", "UL": "L", "SL": "l", "OF": "f"}
_SWAP |= {"FL": "f", "OD": "d", "FD": "d", "OV": "Q", "UV": "Q", "SV": "q", "AT": "H"}


def parse_path(path: str) -> list[int | str]:
    """``7FE00010`` or ``SSSSSSSS/<item>/TTTTTTTT``... as tags (int) and item indexes."""
    path = path.strip("/")
    if not _PATH.fullmatch(path):
        raise MalformedRequest(
            f"bulk data path {path!r} is not a tag (8 hex digits) or a sequence path "
            "'SSSSSSSS/<item index>/TTTTTTTT'"
        )
    return [int(p, 16) if i % 2 == 0 else p for i, p in enumerate(path.split("/"))]


class BulkValue(msgspec.Struct, frozen=True):
    """A located value: in memory (``data``) or a byte range of the stored blob."""

    vr: str
    length: int
    data: bytes | None = None
    offset: int = 0


class _BlobFile(io.RawIOBase):
    """A seekable, read-only file over a stored blob, read in blocks by ``fetch``."""

    name = "<stored instance>"

    def __init__(self, fetch: Callable[[int, int], bytes], size: int) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._pos = 0
        self._start = 0
        self._block = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        # pydicom expects read(n) to return n bytes unless the file ends, so a read
        # that runs past the cached block fetches the next one rather than stopping.
        want = min(len(buffer), self._size - self._pos)
        done = 0
        while done < want:
            at = self._pos - self._start
            if not 0 <= at < len(self._block):
                self._start = self._pos
                end = min(self._size, self._pos + max(want - done, _BLOCK))
                self._block = self._fetch(self._pos, end)
                if not self._block:
                    break
                at = 0
            chunk = self._block[at : at + want - done]
            buffer[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done


def _swapped(vr: str, value: bytes) -> bytes:
    code = _SWAP.get(vr)
    if code is None:
        return value
    words = array(code)
    whole = len(value) - len(value) % words.itemsize
    words.frombytes(value[:whole])
    words.byteswap()
    return words.tobytes() + value[whole:]


def _dictionary_vr(tag: int) -> str:
    """The VR of an implicit VR element whose value was not read."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return "OW" if " or " in vr else vr


def _container(ds: Dataset, path: list[int | str]) -> Dataset:
    """The data set (top level or a sequence item) that holds the path's last tag."""
    where = ds
    for step in range(0, len(path) - 1, 2):
        tag, item = path[step], int(path[step + 1])
        assert isinstance(tag, int)
        elem = where.get(tag)
        if elem is None or elem.VR != "SQ":
            raise NotFound(f"the instance has no sequence ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if item >= len(elem.value):
            raise NotFound(
                f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) has {len(elem.value)} "
                f"item(s); there is no item {item}"
            )
        where = elem.value[item]
    return where


def _locate_sync(
    fetch: Callable[[int, int], bytes], size: int, path: list[int | str], deflated: bool
) -> BulkValue:
    # A deflated data set is parsed from its inflated copy: offsets into it are not
    # offsets into the blob, so every value is read rather than located.
    defer = None if deflated else _DEFER
    try:
        ds = pydicom.dcmread(_BlobFile(fetch, size), defer_size=defer)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise NotFound(f"the stored instance cannot be parsed for bulk data: {exc}") from exc
    little = bool(ds.is_little_endian)
    where = _container(ds, path)
    tag = path[-1]
    assert isinstance(tag, int)
    raw = where.get_item(tag, keep_deferred=True)
    if raw is None:
        raise NotFound(f"the instance has no element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    if isinstance(raw, RawDataElement) and raw.value is None and where is ds and raw.length:
        # A large top-level value pydicom skipped: stream it from storage as a range.
        if raw.length == 0xFFFFFFFF:
            raise MalformedRequest(
                "this bulk data is encapsulated pixel data: retrieve its frames instead"
            )
        vr = str(raw.VR) if raw.VR else _dictionary_vr(tag)
        if little or vr not in _SWAP:
            return BulkValue(vr, raw.length, offset=raw.value_tell)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        value, vr = raw.value, str(raw.VR) if raw.VR else _dictionary_vr(tag)
    else:
        elem = where[tag]
        vr, value = str(elem.VR), elem.value
        if " or " in vr:
            vr = _dictionary_vr(tag)
    if vr == "SQ":
        raise MalformedRequest("the path names a sequence, not a value")
    if value is None:
        value = b""
    if not isinstance(value, bytes):
        raise MalformedRequest("the path names an element without binary content")
    return BulkValue(vr, len(value), data=value if little else _swapped(vr, value))


async def locate(storage: BlobStore, ref: InstanceRef, path: list[int | str]) -> BulkValue:
    """Find the value at ``path`` in the stored instance."""

    async def read_range(start: int, end: int) -> bytes:
        return b"".join([c async for c in storage.read(ref.blob_key, start, end)])

    def fetch(start: int, end: int) -> bytes:
        return anyio.from_thread.run(read_range, start, end)

    deflated = ref.transfer_syntax in DEFLATED_TRANSFER_SYNTAXES
    return await anyio.to_thread.run_sync(_locate_sync, fetch, ref.size, path, deflated)


def stream(
    storage: BlobStore, ref: InstanceRef, value: BulkValue, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of a located value."""
    if value.data is not None:

        async def memory() -> AsyncIterator[bytes]:
            yield value.data[start:end]  # type: ignore[index]

        return memory()
    return storage.read(ref.blob_key, value.offset + start, value.offset + end)
