"""The BlobStore contract: every backend must pass these."""

from __future__ import annotations

import os

import pytest

from service.storage.base import BlobNotFound, BlobStore


async def _read(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def _put(store: BlobStore, key: str, *chunks: bytes) -> None:
    writer = await store.open_writer(key)
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()


async def test_written_blob_reads_back_identical(blob_store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await _put(blob_store, "s/a.dcm", data[:100], data[100:2_000_000], data[2_000_000:])
    assert await _read(blob_store, "s/a.dcm") == data
    assert await blob_store.exists("s/a.dcm")


async def test_ranges(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 8192
    await _put(blob_store, "s/r.dcm", data)
    assert await _read(blob_store, "s/r.dcm", 10, 20) == data[10:20]
    assert await _read(blob_store, "s/r.dcm", 1_500_000) == data[1_500_000:]
    assert await _read(blob_store, "s/r.dcm", 0, len(data) + 10) == data


async def test_read_ranges(blob_store: BlobStore) -> None:
    data = os.urandom(2_500_000)
    await _put(blob_store, "s/rr.dcm", data)
    ranges = [(2_000_000, 300_000), (5, 10), (0, 1), (2_499_990, 100), (100, 0)]
    got = await blob_store.read_ranges("s/rr.dcm", ranges)
    assert got == [data[o : o + n] for o, n in ranges]
    with pytest.raises(BlobNotFound):
        await blob_store.read_ranges("s/none.dcm", [(0, 1)])


async def test_nothing_visible_before_commit(blob_store: BlobStore) -> None:
    writer = await blob_store.open_writer("s/pending.dcm")
    await writer.write(b"x" * 2_000_000)
    assert not await blob_store.exists("s/pending.dcm")
    await writer.commit()
    assert await blob_store.exists("s/pending.dcm")


async def test_abort_leaves_nothing_and_keeps_previous(blob_store: BlobStore) -> None:
    await _put(blob_store, "s/keep.dcm", b"original")
    writer = await blob_store.open_writer("s/keep.dcm")
    await writer.write(b"replacement" * 200_000)
    await writer.abort()
    await writer.abort()  # idempotent
    assert await _read(blob_store, "s/keep.dcm") == b"original"
    writer = await blob_store.open_writer("s/never.dcm")
    await writer.write(b"data")
    await writer.abort()
    assert not await blob_store.exists("s/never.dcm")


async def test_commit_replaces(blob_store: BlobStore) -> None:
    await _put(blob_store, "s/x.dcm", b"one")
    await _put(blob_store, "s/x.dcm", b"two")
    assert await _read(blob_store, "s/x.dcm") == b"two"


async def test_missing_and_delete(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await _read(blob_store, "s/missing.dcm")
    assert not await blob_store.exists("s/missing.dcm")
    await blob_store.delete("s/missing.dcm")  # not an error
    await _put(blob_store, "s/d.dcm", b"d")
    await blob_store.delete("s/d.dcm")
    assert not await blob_store.exists("s/d.dcm")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../b", "a//b", "", "a/.hidden/..", "x y"])
async def test_unsafe_keys_are_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        await blob_store.open_writer(key)


async def test_check_passes_when_usable(blob_store: BlobStore) -> None:
    await blob_store.check()


# A size that crosses the S3 backend's 5 MiB test part size twice, not on a boundary.
LARGE = 12 * 1024 * 1024 + 12345


def _odd_chunks(data: bytes) -> list[bytes]:
    """Chunks of uneven sizes, as a network delivers them."""
    sizes = [1, 65_536, 3_000_001, 7, 1_048_576]
    chunks, at, i = [], 0, 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        chunks.append(data[at : at + n])
        at, i = at + n, i + 1
    return chunks


async def test_large_blob_in_uneven_chunks_reads_back_identical(blob_store: BlobStore) -> None:
    data = os.urandom(LARGE)
    await _put(blob_store, "s/large.dcm", *_odd_chunks(data))
    assert await _read(blob_store, "s/large.dcm") == data


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 1),
        (0, None),
        (LARGE - 1, None),
        (LARGE - 1, LARGE),
        (5 * 1024 * 1024 - 1, 5 * 1024 * 1024 + 1),  # across a part boundary
        (1024 * 1024 - 3, 3 * 1024 * 1024 + 5),  # across read chunks
        (100, 100),  # empty range
        (LARGE, None),  # at the end: nothing
        (LARGE + 10, LARGE + 20),  # past the end: nothing
        (LARGE - 5, LARGE + 100),  # end past the end: clipped
    ],
)
async def test_ranges_at_edges(blob_store: BlobStore, start: int, end: int | None) -> None:
    data = bytes(range(251)) * (LARGE // 251 + 1)
    data = data[:LARGE]
    await _put(blob_store, "s/edges.dcm", data)
    assert await _read(blob_store, "s/edges.dcm", start, end) == data[start:end]


async def test_empty_blob(blob_store: BlobStore) -> None:
    await _put(blob_store, "s/empty.dcm")
    assert await blob_store.exists("s/empty.dcm")
    assert await _read(blob_store, "s/empty.dcm") == b""
    assert await _read(blob_store, "s/empty.dcm", 0, 10) == b""


async def test_abort_after_large_partial_write_leaves_nothing(blob_store: BlobStore) -> None:
    await _put(blob_store, "s/prev.dcm", b"previous")
    for key in ("s/prev.dcm", "s/new.dcm"):
        writer = await blob_store.open_writer(key)
        for chunk in _odd_chunks(os.urandom(LARGE)):
            await writer.write(chunk)
        await writer.abort()
        await writer.abort()
    assert await _read(blob_store, "s/prev.dcm") == b"previous"
    assert not await blob_store.exists("s/new.dcm")


async def test_writer_refuses_use_after_commit(blob_store: BlobStore) -> None:
    writer = await blob_store.open_writer("s/once.dcm")
    await writer.write(b"once")
    await writer.commit()
    with pytest.raises(RuntimeError):
        await writer.write(b"more")
    with pytest.raises(RuntimeError):
        await writer.commit()
    await writer.abort()  # after a commit: changes nothing
    assert await _read(blob_store, "s/once.dcm") == b"once"


@pytest.mark.parametrize(("first", "second"), [(10, LARGE), (LARGE, 10), (LARGE, LARGE - 1)])
async def test_overwrite_of_any_size_by_any_size(
    blob_store: BlobStore, first: int, second: int
) -> None:
    await _put(blob_store, "s/o.dcm", os.urandom(first))
    data = os.urandom(second)
    await _put(blob_store, "s/o.dcm", *_odd_chunks(data))
    assert await _read(blob_store, "s/o.dcm") == data


async def test_keys_are_independent(blob_store: BlobStore) -> None:
    await _put(blob_store, "s/studies/1/a.dcm", b"a")
    await _put(blob_store, "s/studies/1/ab.dcm", b"ab")
    await blob_store.delete("s/studies/1/a.dcm")
    assert not await blob_store.exists("s/studies/1/a.dcm")
    assert not await blob_store.exists("s/studies/1")
    assert await _read(blob_store, "s/studies/1/ab.dcm") == b"ab"
    await blob_store.delete("s/studies/1/a.dcm")  # twice: still not an error


async def test_a_writer_that_need_not_be_durable_commits_the_same_way(
    blob_store: BlobStore,
) -> None:
    data = os.urandom(LARGE)
    for content in (b"old", data):
        writer = await blob_store.open_writer("s/cache/doc", durable=False)
        for chunk in _odd_chunks(content):
            await writer.write(chunk)
        await writer.commit()
    assert await _read(blob_store, "s/cache/doc") == data
    writer = await blob_store.open_writer("s/cache/doc", durable=False)
    await writer.write(b"never")
    await writer.abort()
    assert await _read(blob_store, "s/cache/doc") == data
