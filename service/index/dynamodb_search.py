"""QIDO-RS on DynamoDB: choose the index that yields the fewest candidate studies, keep
the candidates every matching key accepts, and page through them in the SQLite
index's order.

Every candidate is checked against all of the query's keys with the backend-independent
predicates of :mod:`service.core.matching`, so an index only has to return a superset:
results equal the SQLite index's. Which index serves a query (first that applies):

1. the study in the URL, or ``StudyInstanceUID`` values: the base table;
2. ``SeriesInstanceUID`` values (series and instance level): ``by_series``;
   ``SOPInstanceUID`` values (instance level): the instances' location items;
3. ``PatientID``, then ``AccessionNumber`` (a value or a list): ``by_patient_id``,
   ``by_accession``;
4. ``PatientName``, ``ReferringPhysicianName``: a value, a wildcard that does not start
   with ``*`` or ``?``, fuzzy words: ``tokens``;
5. ``StudyDate`` (a date or range): ``by_date``;
6. ``ModalitiesInStudy`` or ``Modality`` (a value or list): ``tokens``.

Otherwise the store's studies are read in UID order from ``by_uid`` and filtered: a
*bounded scan* of at most ``scan_limit`` studies, reported in :attr:`SearchPage.warning`
when it filters on keys (a plain listing is not a scan). More candidates than
``scan_limit`` from any index also give a warning that results may be incomplete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, NamedTuple

from service.core.matching import (
    NAME_ATTRIBUTES,
    matches_modalities,
    matches_name,
    matches_value,
)
from service.core.search import Level, Match, Query, SearchHit, SearchPage
from service.index.dynamodb_schema import (
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    STUDY_SK,
    TOKEN_CHARS,
    Item,
    LevelState,
    decode_level,
    instance_sk,
    sop_pk,
    study_pk,
)
from service.index.dynamodb_table import Table

__all__ = ["Searcher"]

_INSTANCE_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
_SMALL = "SK, #st, study, series, sop, cls, tsx, #k, #sz, sha, inum"
_PARTITION = _SMALL + ", uid, doc, ni, rev, ver, cols"
_SMALL_NAMES = {"#st": "store", "#k": "key", "#sz": "size"}


def _domain(keyword: str) -> Level:
    if keyword in (*NAME_ATTRIBUTES, *STUDY_KEYWORDS, "ModalitiesInStudy", "StudyInstanceUID"):
        return Level.STUDY
    if keyword in (*SERIES_KEYWORDS, "SeriesInstanceUID"):
        return Level.SERIES
    if keyword in _INSTANCE_KEYWORDS:
        return Level.INSTANCE
    raise ValueError(f"no stored value for {keyword}")


def _study_ok(match: Match, study: LevelState) -> bool:
    keyword = match.keyword
    if keyword in NAME_ATTRIBUTES:
        return matches_name(match, study.names.get(keyword))
    if keyword == "ModalitiesInStudy":
        return matches_modalities(match, study.series.values())
    if keyword == "StudyInstanceUID":
        return matches_value(match, study.uid)
    return matches_value(match, study.columns.get(keyword))


def _series_ok(match: Match, series: LevelState) -> bool:
    if match.keyword == "SeriesInstanceUID":
        return matches_value(match, series.uid)
    return matches_value(match, series.columns.get(match.keyword))


def _instance_ok(match: Match, item: Item) -> bool:
    if match.keyword == "SOPInstanceUID":
        return matches_value(match, item["sop"]["S"])
    if match.keyword == "SOPClassUID":
        return matches_value(match, item["cls"]["S"])
    inum = item.get("inum")
    return matches_value(match, int(inum["N"]) if inum else None)


def _series_order(series: LevelState) -> tuple[bool, int, str]:
    n = series.columns.get("SeriesNumber")
    return (not isinstance(n, int), n if isinstance(n, int) else 0, series.uid)


def _instance_order(item: Item) -> tuple[str, bool, int, str]:
    inum = item.get("inum")
    return (item["series"]["S"], inum is None, int(inum["N"]) if inum else 0, item["sop"]["S"])


def _prefix(pattern: str) -> str:
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


class _Row(NamedTuple):
    study: LevelState
    series: LevelState | None = None
    instance: Item | None = None


class Found(NamedTuple):
    """A page found by :meth:`Searcher.run`, before instance documents are read."""

    level: Level
    rows: list[_Row]
    more: bool
    warning: str


class Searcher:
    """Answers one :class:`Query` for one store (blocking: run it in a worker thread)."""

    def __init__(self, table: Table, store: str, scan_limit: int) -> None:
        self.table = table
        self.store = store
        self.scan_limit = scan_limit
        self._truncated = False

    # -- candidate studies -------------------------------------------------------------

    def _studies(self, uids: Iterable[str]) -> list[LevelState]:
        keys = [(study_pk(self.store, uid), STUDY_SK) for uid in uids]
        return [decode_level(item) for item in self.table.batch_get(keys)]

    def _gsi(
        self, index: str, condition: str, values: Item, names: dict[str, str] | None = None
    ) -> Iterator[Item]:
        kwargs: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        return self.table.query(**kwargs)

    def _token_studies(self, tk: str, condition: str = "", value: str = "") -> Iterator[str]:
        values: Item = {":k": {"S": tk}}
        if condition:
            values[":v"] = {"S": value}
        items = self._gsi("tokens", f"tk = :k{condition}", values)
        prefix = f"{self.store}#STUDY#"
        for item in items:
            yield item["PK"]["S"].removeprefix(prefix)

    def _plan(self, query: Query, matches: list[Match]) -> Iterator[LevelState] | None:
        """Candidate studies from the best index (any order, maybe repeated); None when
        no index applies."""
        store = self.store
        by = {m.keyword: m for m in matches}
        uid = by.get("StudyInstanceUID")
        if uid is not None and uid.kind in ("any", "equal"):
            return iter(self._studies(uid.values))
        series = by.get("SeriesInstanceUID")
        if query.level >= Level.SERIES and series is not None and series.kind in ("any", "equal"):
            prefix = f"{store}#STUDY#"
            located: Iterator[str] = (
                item["PK"]["S"].removeprefix(prefix)
                for value in series.values
                for item in self._gsi("by_series", "se_k = :k", {":k": {"S": f"{store}#{value}"}})
            )
            return self._lazy_studies(located)
        sop = by.get("SOPInstanceUID")
        if query.level == Level.INSTANCE and sop is not None and sop.kind in ("any", "equal"):
            refs = self.table.batch_get([(sop_pk(store, v), "REF") for v in sop.values])
            return iter(self._studies(r["study"]["S"] for r in refs))
        for keyword, index, attribute in (
            ("PatientID", "by_patient_id", "pid_k"),
            ("AccessionNumber", "by_accession", "acc_k"),
        ):
            match = by.get(keyword)
            if match is not None and match.kind in ("any", "equal"):
                items = (
                    item
                    for value in match.values
                    for item in self._gsi(
                        index, f"{attribute} = :k", {":k": {"S": f"{store}#{value}"}}
                    )
                )
                return (decode_level(i) for i in items)
        for keyword in NAME_ATTRIBUTES:
            match = by.get(keyword)
            if match is None:
                continue
            base = f"{store}#PN#{keyword}"
            if match.kind == "equal" and match.values[0]:
                value = match.values[0]
                found = self._token_studies(
                    f"{base}#g#{value[0]}",
                    " AND ts = :v" if len(value) <= TOKEN_CHARS else " AND begins_with(ts, :v)",
                    value[:TOKEN_CHARS],
                )
            elif match.kind == "wildcard" and _prefix(match.values[0]):
                value = _prefix(match.values[0])[:TOKEN_CHARS]
                found = self._token_studies(
                    f"{base}#g#{value[0]}", " AND begins_with(ts, :v)", value
                )
            elif match.kind == "words" and match.values:
                value = match.values[0][:TOKEN_CHARS]
                found = self._token_studies(
                    f"{base}#w#{value[0]}", " AND begins_with(ts, :v)", value
                )
            else:
                continue
            return self._lazy_studies(found)
        date = by.get("StudyDate")
        if date is not None and date.kind in ("equal", "range"):
            values: Item = {":k": {"S": store}}
            low, high = date.values * 2 if date.kind == "equal" else date.values
            if low:
                values[":lo"] = {"S": low}
            if high:
                values[":hi"] = {"S": high}
            condition = (
                "date_s BETWEEN :lo AND :hi"
                if low and high
                else "date_s >= :lo"
                if low
                else "date_s <= :hi"
            )
            dated = self._gsi("by_date", f"date_k = :k AND {condition}", values)
            return (decode_level(i) for i in dated)
        for keyword in ("ModalitiesInStudy", "Modality"):
            match = by.get(keyword)
            if match is not None and match.kind in ("any", "equal"):
                found = (
                    uid
                    for value in match.values
                    for uid in self._token_studies(f"{store}#MOD#{value}")
                )
                return self._lazy_studies(found)
        return None

    def _lazy_studies(self, uids: Iterator[str]) -> Iterator[LevelState]:
        """Study items for a stream of UIDs, fetched in batches as the stream goes."""
        batch: list[str] = []
        seen: set[str] = set()
        for uid in uids:
            if uid in seen:
                continue
            seen.add(uid)
            batch.append(uid)
            if len(batch) == 100:
                yield from self._studies(batch)
                batch = []
        if batch:
            yield from self._studies(batch)

    def _all_studies(self, page: int) -> Iterator[LevelState]:
        """Every study of the store in UID order, read ``page`` at a time as needed."""
        items = self.table.query(
            IndexName="by_uid",
            KeyConditionExpression="all_k = :k",
            ExpressionAttributeValues={":k": {"S": self.store}},
            Limit=page,
        )
        return (decode_level(i) for i in items)

    # -- one study's series and instances ----------------------------------------------

    def _series(
        self, query: Query, items: Iterable[Item], matches: list[Match]
    ) -> list[LevelState]:
        found = [decode_level(i) for i in items if i["SK"]["S"].startswith("SERIES#")]
        found = [
            s
            for s in found
            if (query.series_uid is None or s.uid == query.series_uid)
            and all(_series_ok(m, s) for m in matches)
        ]
        return sorted(found, key=_series_order)

    def _instances(
        self,
        study: LevelState,
        series: list[LevelState],
        items: Iterable[Item],
        matches: list[Match],
    ) -> list[_Row]:
        by_uid = {s.uid: s for s in series}
        kept = [
            i
            for i in items
            if i["SK"]["S"].startswith("INST#")
            and i["series"]["S"] in by_uid
            and all(_instance_ok(m, i) for m in matches)
        ]
        kept.sort(key=_instance_order)
        return [_Row(study, by_uid[i["series"]["S"]], i) for i in kept]

    def _below(
        self, study: LevelState, query: Query, levels: dict[Level, list[Match]]
    ) -> list[_Row]:
        """The matching series or instances of one study, in order."""
        pk = study_pk(self.store, study.uid)
        if query.level == Level.SERIES or query.series_uid is not None:
            prefix = "SERIES#" if query.series_uid is None else f"SERIES#{query.series_uid}"
            series = self._series(query, self.table.partition(pk, prefix), levels[Level.SERIES])
            if query.level == Level.SERIES:
                return [_Row(study, s) for s in series]
            if not series:
                return []
            items: Iterable[Item] = self.table.partition(
                pk, f"INST#{query.series_uid}#", projection=_SMALL, names=_SMALL_NAMES
            )
        else:
            # All instances of a study: its series and instances in one read, without
            # the instances' metadata.
            items = list(self.table.partition(pk, "", projection=_PARTITION, names=_SMALL_NAMES))
            series = self._series(query, items, levels[Level.SERIES])
        return self._instances(study, series, items, levels[Level.INSTANCE])

    # -- the search ----------------------------------------------------------------------

    def run(self, query: Query) -> Found:
        levels: dict[Level, list[Match]] = {level: [] for level in Level}
        for match in query.matches:
            levels[_domain(match.keyword)].append(match)
        study_matches = levels[Level.STUDY]
        target = query.offset + query.limit + 1
        scanned = False
        # A plain listing reads only the studies up to its page, as offset paging must;
        # only reading studies to filter them is bounded.
        bound = self.scan_limit
        if query.study_uid is not None:
            item = self.table.get(study_pk(self.store, query.study_uid), STUDY_SK)
            studies: Iterator[LevelState] = iter([decode_level(item)] if item else [])
        else:
            plan = self._plan(query, list(query.matches))
            if plan is None:
                studies = self._all_studies(min(target, 1000))
                scanned = bool(query.matches)
                if not query.matches:
                    bound = 1 << 62
            else:
                studies = self._bounded_sorted(plan)
        rows: list[_Row] = []
        examined, truncated = 0, False
        for study in studies:
            if study.instances <= 0:
                continue
            examined += 1
            if examined > bound:
                truncated = True
                break
            if not all(_study_ok(m, study) for m in study_matches):
                continue
            if query.level == Level.STUDY:
                rows.append(_Row(study))
            else:
                rows.extend(self._below(study, query, levels))
            if len(rows) >= target:
                break
        truncated = truncated or self._truncated
        warnings = []
        if scanned:
            warnings.append(
                "No index of the DynamoDB table serves these matching keys: the studies "
                f"were scanned in UID order, at most {self.scan_limit} of them"
            )
        if truncated:
            warnings.append(
                f"The search reached its limit of {self.scan_limit} studies read, so the "
                "results may be incomplete; narrow it with StudyInstanceUID, PatientID, "
                "AccessionNumber, PatientName, StudyDate or ModalitiesInStudy"
            )
        page = rows[query.offset : query.offset + query.limit]
        if query.level == Level.INSTANCE and page:
            keys = [
                (
                    study_pk(self.store, r.study.uid),
                    instance_sk(r.instance["series"]["S"], r.instance["sop"]["S"]),
                )
                for r in page
                if r.instance is not None
            ]
            full = {(i["study"]["S"], i["sop"]["S"]): i for i in self.table.batch_get(keys)}
            # An instance moved or removed since it was listed is left out of the page
            # rather than answered without its document.
            page = [
                r._replace(instance=full[key])
                for r in page
                if r.instance is not None and (key := (r.study.uid, r.instance["sop"]["S"])) in full
            ]
        return Found(query.level, page, len(rows) > query.offset + query.limit, "; ".join(warnings))

    def _bounded_sorted(self, candidates: Iterator[LevelState]) -> Iterator[LevelState]:
        """At most ``scan_limit`` candidates, deduplicated, in Study Instance UID order."""
        unique: dict[str, LevelState] = {}
        for study in candidates:
            if len(unique) >= self.scan_limit and study.uid not in unique:
                self._truncated = True
                break
            unique[study.uid] = study
        return iter(sorted(unique.values(), key=lambda s: s.uid))

    async def finish(
        self, found: Found, metadata: Callable[[Item], Awaitable[bytes]]
    ) -> SearchPage:
        """The :class:`SearchPage`, with instance documents read (maybe from blobs)."""
        hits = []
        for row in found.rows:
            study = row.study
            hit: dict[str, Any] = {
                "study_uid": study.uid,
                "study": study.document,
                "study_series": len(study.series),
                "study_instances": study.instances,
                "modalities": study.modalities,
            }
            if row.series is not None:
                hit.update(
                    series_uid=row.series.uid,
                    series=row.series.document,
                    series_instances=row.series.instances,
                )
            if row.instance is not None:
                hit.update(sop_uid=row.instance["sop"]["S"], instance=await metadata(row.instance))
            hits.append(SearchHit(**hit))
        return SearchPage(hits=hits, more=found.more, warning=found.warning)
