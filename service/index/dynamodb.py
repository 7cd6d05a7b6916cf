"""DynamoDB Index: the distributed backend, for any number of service replicas.

The table layout is in :mod:`service.index.dynamodb_schema`, searching in
:mod:`service.index.dynamodb_search`. Writes use optimistic locking: a commit reads
the items it changes (the instance's location, its study and series, and the study
and series it moves out of), computes their new state exactly as the SQLite index does,
and writes everything in one ``TransactWriteItems`` whose conditions say "nothing
changed since I read it". When another writer got there first, the commit reads again
and retries, so counts, merged documents and revisions stay exact under concurrency.

Instance metadata is kept in the instance item, zlib-compressed; a document (with its
frame layout) too large for that goes to the BlobStore under
``{store}/metadata/{study}/{series}/{sop}.{random}.msgpack`` and the item keeps the key.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec

from service.config import Settings
from service.core.matching import NAME_ATTRIBUTES, number
from service.core.search import Query, SearchPage
from service.errors import BackendUnavailable
from service.index.base import Claim, Index, InstanceRecord, InstanceRef
from service.index.dynamodb_schema import (
    CLAIMS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    STUDY_SK,
    Item,
    LevelState,
    create_table,
    decode_level,
    encode_level,
    instance_sk,
    series_sk,
    sop_pk,
    study_pk,
    tokens,
)
from service.index.dynamodb_search import Searcher
from service.index.dynamodb_table import Table, make_client, table_name
from service.storage.base import BlobStore

__all__ = ["DynamoDBIndex", "init_table", "table_name"]

T = TypeVar("T")

#: How many times a commit re-reads and retries after losing a race for its items.
COMMIT_ATTEMPTS = 60
_documents = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


def _merged(old: bytes, new: bytes) -> bytes:
    """A level document updated with an instance's: missing attributes are kept."""
    if old == new:
        return old  # most instances repeat their study's and series' values
    merged = _documents.decode(old)
    merged.update(_documents.decode(new))
    return _encode({tag: merged[tag] for tag in sorted(merged)})


def ref_from_item(item: Item) -> InstanceRef:
    return InstanceRef(
        store=item["store"]["S"],
        study_uid=item["study"]["S"],
        series_uid=item["series"]["S"],
        sop_uid=item["sop"]["S"],
        sop_class_uid=item["cls"]["S"],
        transfer_syntax=item["tsx"]["S"],
        blob_key=item["key"]["S"],
        size=int(item["size"]["N"]),
        sha256=item["sha"]["S"],
    )


def _ref_attributes(record: InstanceRecord) -> Item:
    return {
        "store": {"S": record.store},
        "study": {"S": record.study_uid},
        "series": {"S": record.series_uid},
        "sop": {"S": record.sop_uid},
        "cls": {"S": record.sop_class_uid},
        "tsx": {"S": record.transfer_syntax},
        "key": {"S": record.blob_key},
        "size": {"N": str(record.size)},
        "sha": {"S": record.sha256},
    }


class _Unit:
    """The study and series items one commit reads, changes and writes back."""

    def __init__(self, table: Table, store: str) -> None:
        self.table = table
        self.store = store
        # (study, series or None) -> (state as read or None, state now or None)
        self.levels: dict[tuple[str, str | None], tuple[LevelState | None, LevelState | None]] = {}

    def _key(self, study: str, series: str | None) -> tuple[str, str]:
        return study_pk(self.store, study), series_sk(series) if series else STUDY_SK

    def load(self, *keys: tuple[str, str | None]) -> None:
        """Read these study / series items in one request (strongly consistent)."""
        wanted = {self._key(*k): k for k in keys if k not in self.levels}
        found = {(i["PK"]["S"], i["SK"]["S"]): i for i in self.table.batch_get(list(wanted))}
        for table_key, (study, series) in wanted.items():
            item = found.get(table_key)
            read = decode_level(item) if item else None
            self.levels[(study, series)] = (
                read,
                copy.deepcopy(read) if read else LevelState(uid=series or study),
            )

    def level(self, study: str, series: str | None = None) -> LevelState:
        key = (study, series)
        self.load(key)
        state = self.levels[key][1]
        if state is None:
            raise RuntimeError(f"{key} was dropped in this commit and used again")
        return state

    def drop(self, study: str, series: str | None = None) -> None:
        read, _ = self.levels[(study, series)]
        self.levels[(study, series)] = (read, None)

    def actions(self) -> list[Item]:
        table, out = self.table.name, []
        for (study, series), (read, now) in self.levels.items():
            pk = study_pk(self.store, study)
            sk = series_sk(series) if series else STUDY_SK
            version = read.version if read else 0
            condition: dict[str, Any] = (
                {
                    "ConditionExpression": "ver = :v",
                    "ExpressionAttributeValues": {":v": {"N": str(version)}},
                }
                if read
                else {"ConditionExpression": "attribute_not_exists(PK)"}
            )
            if now is None:
                if read:
                    key = {"PK": {"S": pk}, "SK": {"S": sk}}
                    out.append({"Delete": {"TableName": table, "Key": key, **condition}})
            else:
                now.version = version + 1
                item = encode_level(self.store, study, now, is_study=series is None)
                out.append({"Put": {"TableName": table, "Item": item, **condition}})
            if series is None:
                before, after = tokens(self.store, read), tokens(self.store, now)
                for sk_token, keys in after.items():
                    if before.get(sk_token) != keys:
                        item = {"PK": {"S": pk}, "SK": {"S": sk_token}, **keys}
                        out.append({"Put": {"TableName": table, "Item": item}})
                for sk_token in before.keys() - after.keys():
                    key = {"PK": {"S": pk}, "SK": {"S": sk_token}}
                    out.append({"Delete": {"TableName": table, "Key": key}})
        return out


def _bump(state: LevelState) -> None:
    # Microseconds, forced to grow: a study emptied and stored again later never gets a
    # revision it had before (the SQLite index does the same).
    state.revision = max(state.revision + 1, time.time_ns() // 1000)


class DynamoDBIndex(Index):
    def __init__(
        self,
        table: str,
        *,
        blobs: BlobStore,
        region: str = "us-east-1",
        endpoint_url: str = "",
        scan_limit: int = 10_000,
        inline_bytes: int = 64 * 1024,
    ) -> None:
        self.table = Table(make_client(region, endpoint_url), table)
        self.blobs = blobs
        self.scan_limit = scan_limit
        self.inline_bytes = inline_bytes
        self._limiter = anyio.CapacityLimiter(32)
        self._study_locks = [threading.Lock() for _ in range(64)]

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> DynamoDBIndex:
        return cls(table_name(url), **kwargs)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    async def open(self) -> None:
        """Nothing to set up: the table is created by ``python -m service init-aws``."""

    # -- claims ------------------------------------------------------------------------

    async def claim(self, store: str, sop_uid: str, blob_key: str, owner: str) -> bool:
        item = {
            "PK": {"S": sop_pk(store, sop_uid)},
            "SK": {"S": "CLAIM"},
            "store": {"S": store},
            "sop": {"S": sop_uid},
            "key": {"S": blob_key},
            "owner": {"S": owner},
            "ck": {"S": CLAIMS},
            "at": {"N": repr(time.time())},
        }
        return await self._run(lambda: self.table.put_if_absent(item))

    async def release(self, store: str, sop_uid: str, owner: str) -> None:
        await self._run(
            lambda: self.table.delete_if(
                sop_pk(store, sop_uid), "CLAIM", "#o = :o", {":o": {"S": owner}}, {"#o": "owner"}
            )
        )

    async def stale_claims(self, older_than: float) -> list[Claim]:
        def select() -> list[Claim]:
            items = self.table.query(
                IndexName="claims",
                KeyConditionExpression="ck = :c AND #at < :t",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues={":c": {"S": CLAIMS}, ":t": {"N": repr(older_than)}},
            )
            return [
                Claim(
                    store=i["store"]["S"],
                    sop_uid=i["sop"]["S"],
                    blob_key=i["key"]["S"],
                    owner=i["owner"]["S"],
                    claimed_at=float(i["at"]["N"]),
                )
                for i in items
            ]

        return await self._run(select)

    # -- commit ------------------------------------------------------------------------

    async def _payload(self, record: InstanceRecord) -> tuple[Item, str | None]:
        """The instance item's metadata attributes, and the blob key when they went to
        the BlobStore because they would make the item too large."""
        metadata = zlib.compress(record.metadata, 6)
        layout = zlib.compress(record.layout, 6)
        if len(metadata) + len(layout) <= self.inline_bytes:
            return {"md": {"B": metadata}, "lay": {"B": layout}}, None
        key = (
            f"{record.store}/metadata/{record.study_uid}/{record.series_uid}/"
            f"{record.sop_uid}.{uuid.uuid4().hex}.msgpack"
        )
        writer = await self.blobs.open_writer(key)
        try:
            await writer.write(msgspec.msgpack.encode((record.metadata, record.layout)))
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return {"mdk": {"S": key}}, key

    async def commit(self, record: InstanceRecord, owner: str) -> None:
        payload, blob = await self._payload(record)
        try:
            previous_blob = await self._run(lambda: self._commit(record, owner, payload, blob))
        except BaseException:
            if blob is not None:
                with anyio.CancelScope(shield=True):
                    await self.blobs.delete(blob)
            raise
        if previous_blob is not None and previous_blob != blob:
            await self.blobs.delete(previous_blob)

    def _stripe(self, store: str, study: str) -> int:
        return hash((store, study)) % len(self._study_locks)

    def _commit(
        self, record: InstanceRecord, owner: str, payload: Item, blob: str | None
    ) -> str | None:
        # Commits into one study from this process take turns: they would only conflict
        # and retry in DynamoDB otherwise (a STOW request stores several parts of a study
        # at once). Other processes are kept in order by the transaction's conditions.
        stripes = {self._stripe(record.store, record.study_uid)}
        for attempt in range(COMMIT_ATTEMPTS):
            with ExitStack() as held:
                for stripe in sorted(stripes):
                    held.enter_context(self._study_locks[stripe])
                actions, previous_blob, previous = self._actions(record, owner, payload, blob)
                if previous is not None:
                    needed = stripes | {self._stripe(record.store, previous[0])}
                    if needed != stripes:  # moving out of another study: hold its lock too
                        stripes = needed
                        continue
                if self.table.transact(actions):
                    return previous_blob
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # noqa: S311
        raise BackendUnavailable(
            f"DynamoDB table {self.table.name!r}: could not commit SOP Instance "
            f"{record.sop_uid} after {COMMIT_ATTEMPTS} attempts (too many concurrent writers)"
        )

    def _actions(
        self, record: InstanceRecord, owner: str, payload: Item, blob: str | None
    ) -> tuple[list[Item], str | None, tuple[str, str] | None]:
        """The transaction that commits ``record``, the metadata blob it makes unused,
        and the (study, series) the instance was in before."""
        table, store = self.table, record.store
        study_uid, series_uid, sop = record.study_uid, record.series_uid, record.sop_uid
        held = {i["SK"]["S"]: i for i in table.partition(sop_pk(store, sop), "", projection=None)}
        ref, claim = held.get("REF"), held.get("CLAIM")
        previous = (ref["study"]["S"], ref["series"]["S"]) if ref else None
        unit = _Unit(table, store)
        if previous is not None:
            unit.load((study_uid, None), (study_uid, series_uid), (previous[0], None), previous)
        else:
            unit.load((study_uid, None), (study_uid, series_uid))
        attributes = record.attributes
        study = unit.level(study_uid)
        series = unit.level(study_uid, series_uid)
        study.document = (
            _merged(study.document, record.study_document)
            if study.version
            else record.study_document
        )
        series.document = (
            _merged(series.document, record.series_document)
            if series.version
            else record.series_document
        )
        study.update(STUDY_KEYWORDS, attributes)
        series.update(SERIES_KEYWORDS, attributes)
        for keyword in NAME_ATTRIBUTES:
            if attributes.get(keyword):  # an instance without the name keeps the known one
                study.names[keyword] = attributes[keyword]
        moved = previous is not None and previous != (study_uid, series_uid)
        if previous is None or moved:
            study.instances += 1
            series.instances += 1
        modality = series.columns.get("Modality")
        study.series[series_uid] = modality if isinstance(modality, str) else ""
        actions: list[Item] = []
        if moved and previous is not None:
            old_study_uid, old_series_uid = previous
            old_series = unit.level(old_study_uid, old_series_uid)
            old_study = unit.level(old_study_uid)
            old_series.instances -= 1
            old_study.instances -= 1
            _bump(old_series)
            _bump(old_study)
            if old_series.instances <= 0:
                unit.drop(old_study_uid, old_series_uid)
                old_study.series.pop(old_series_uid, None)
            if old_study.instances <= 0:
                unit.drop(old_study_uid)
            actions.append(
                {
                    "Delete": {
                        "TableName": table.name,
                        "Key": {
                            "PK": {"S": study_pk(store, old_study_uid)},
                            "SK": {"S": instance_sk(old_series_uid, sop)},
                        },
                    }
                }
            )
        _bump(series)
        _bump(study)
        version = int(ref["ver"]["N"]) if ref else 0
        ref_item = {
            "PK": {"S": sop_pk(store, sop)},
            "SK": {"S": "REF"},
            **_ref_attributes(record),
            "ver": {"N": str(version + 1)},
        }
        if blob is not None:
            ref_item["mdk"] = {"S": blob}
        ref_condition: dict[str, Any] = (
            {
                "ConditionExpression": "ver = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }
            if ref
            else {"ConditionExpression": "attribute_not_exists(PK)"}
        )
        actions.append({"Put": {"TableName": table.name, "Item": ref_item, **ref_condition}})
        instance_item = {
            "PK": {"S": study_pk(store, study_uid)},
            "SK": {"S": instance_sk(series_uid, sop)},
            **_ref_attributes(record),
            "attrs": {"B": zlib.compress(_encode(attributes))},
            "stored": {"N": repr(record.stored_at or time.time())},
            **payload,
        }
        instance_number = number(attributes.get("InstanceNumber"))
        if instance_number is not None:
            instance_item["inum"] = {"N": str(instance_number)}
        actions.append({"Put": {"TableName": table.name, "Item": instance_item}})
        actions.extend(unit.actions())
        if claim is not None and claim["owner"]["S"] == owner:
            actions.append(
                {
                    "Delete": {
                        "TableName": table.name,
                        "Key": {"PK": {"S": sop_pk(store, sop)}, "SK": {"S": "CLAIM"}},
                        "ConditionExpression": "#o = :o",
                        "ExpressionAttributeNames": {"#o": "owner"},
                        "ExpressionAttributeValues": {":o": {"S": owner}},
                    }
                }
            )
        previous_blob = ref["mdk"]["S"] if ref and "mdk" in ref else None
        return actions, previous_blob, previous

    # -- reading -----------------------------------------------------------------------

    async def find(self, store: str, sop_uid: str) -> InstanceRef | None:
        item = await self._run(lambda: self.table.get(sop_pk(store, sop_uid), "REF"))
        return ref_from_item(item) if item else None

    def _instance_items(
        self, store: str, study_uid: str, series_uid: str | None, sop_uid: str | None, full: bool
    ) -> list[Item]:
        prefix = "INST#"
        if series_uid is not None:
            prefix = (
                instance_sk(series_uid, sop_uid) if sop_uid is not None else f"INST#{series_uid}#"
            )
        projection = None if full else "#st, study, series, sop, cls, tsx, #k, #sz, sha, inum"
        names = None if full else {"#st": "store", "#k": "key", "#sz": "size"}
        items = [
            i
            for i in self.table.partition(
                study_pk(store, study_uid), prefix, projection=projection, names=names
            )
            if sop_uid is None or i["sop"]["S"] == sop_uid
        ]
        items.sort(key=_instance_order)
        return items

    async def instances(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[InstanceRef]:
        items = await self._run(
            lambda: self._instance_items(store, study_uid, series_uid, sop_uid, full=False)
        )
        return [ref_from_item(i) for i in items]

    async def metadata(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        items = await self._run(
            lambda: self._instance_items(store, study_uid, series_uid, sop_uid, full=True)
        )
        return [(ref_from_item(i), await self.instance_metadata(i)) for i in items]

    async def instance_metadata(self, item: Item) -> bytes:
        """An instance item's DICOM JSON document, from the item or from the BlobStore."""
        return (await self._documents(item))[0]

    async def _documents(self, item: Item) -> tuple[bytes, bytes]:
        """(metadata, layout) of an instance item, from the item or from the BlobStore."""
        if "md" in item:
            return zlib.decompress(item["md"]["B"]), zlib.decompress(item["lay"]["B"])
        chunks = [chunk async for chunk in self.blobs.read(item["mdk"]["S"])]
        return msgspec.msgpack.decode(b"".join(chunks), type=tuple[bytes, bytes])

    async def layouts(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        """Like :meth:`instances`, with each instance's layout document (pixel data
        location and frame table; empty when it has none)."""
        items = await self._run(
            lambda: self._instance_items(store, study_uid, series_uid, sop_uid, full=True)
        )
        return [(ref_from_item(i), (await self._documents(i))[1]) for i in items]

    async def revision(
        self, store: str, study_uid: str, series_uid: str | None = None
    ) -> int | None:
        sk = STUDY_SK if series_uid is None else series_sk(series_uid)
        item = await self._run(lambda: self.table.get(study_pk(store, study_uid), sk))
        return int(item["rev"]["N"]) if item else None

    async def search(self, store: str, query: Query) -> SearchPage:
        searcher = Searcher(self.table, store, self.scan_limit)
        page = await self._run(lambda: searcher.run(query))
        return await searcher.finish(page, self.instance_metadata)

    async def check(self) -> None:
        await self._run(lambda: self.table.get("#CHECK", "#CHECK"))

    async def close(self) -> None:
        self.table.client.close()


def _instance_order(item: Item) -> tuple[str, bool, int, str]:
    inum = item.get("inum")
    return (item["series"]["S"], inum is None, int(inum["N"]) if inum else 0, item["sop"]["S"])


def init_table(settings: Settings, report: Callable[[str], None] = print) -> bool:
    """Create the table of ``DICOMWEB_INDEX=dynamodb://table`` if it is missing (the
    index step of ``python -m service init-aws``); report what was done. Idempotent."""
    name = table_name(settings.index_url)
    client = make_client(settings.aws_region, settings.dynamodb_endpoint_url)
    try:
        created = create_table(client, name)
    finally:
        client.close()
    report(f"table {name}: {'created' if created else 'exists'}")
    return True
