"""The DynamoDB index's table: keys, secondary indexes, and the items an instance makes.

One table, string keys ``PK`` / ``SK``. Every study is one partition::

    PK {store}#STUDY#{study}   SK #STUDY                    the study: QIDO columns, names,
                                                            document, counts, its series'
                                                            modalities, revision
                               SK SERIES#{series}           a series: columns, document, count
                               SK INST#{series}#{sop}       an instance: where it is, its
                                                            metadata (zlib) or a pointer to it
                               SK TOK#PN#{attr}#{g|w}#{v}   one person-name group or word
                               SK TOK#MOD#{modality}        one modality of the study
    PK {store}#SOP#{sop}       SK REF                       where the instance is (find)
                               SK CLAIM                     an upload's claim

Sparse global secondary indexes (an item is in an index only when it has its key
attributes; only study, series, token and claim items have them):

=================  =====================  ==================  ===========================
index              partition key          sort key            serves
=================  =====================  ==================  ===========================
``by_uid``         ``all_k`` = store      ``uid`` study UID   every study in UID order
``by_patient_id``  ``pid_k`` store#id     ``uid``             PatientID (single value, list)
``by_accession``   ``acc_k`` store#acc    ``uid``             AccessionNumber
``by_date``        ``date_k`` = store     ``date_s`` date     StudyDate (value, range)
``tokens``         ``tk`` (below)         ``ts``              PatientName,
                                                              ReferringPhysicianName,
                                                              ModalitiesInStudy / Modality
``by_series``      ``se_k`` store#series  ``uid`` series UID  SeriesInstanceUID
``claims``         ``ck`` = CLAIMS        ``at`` epoch s      stale claims
=================  =====================  ==================  ===========================

Token items: a name group or word ``v`` has ``tk = {store}#PN#{attr}#{g|w}#{v[0]}`` and
``ts = v`` (so a prefix is a ``begins_with`` on one partition); a modality has
``tk = {store}#MOD#{modality}`` and ``ts`` the study UID.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.core.matching import NAME_ATTRIBUTES, column_value, name_rows
from service.core.search import ATTRIBUTES, Level

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "CLAIMS",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "STUDY_SK",
    "TOKEN_CHARS",
    "Item",
    "LevelState",
    "create_table",
    "decode_level",
    "encode_level",
    "instance_sk",
    "series_sk",
    "sop_pk",
    "study_pk",
    "table_definition",
    "tokens",
]

Item = dict[str, Any]

STUDY_SK = "#STUDY"
#: Name tokens are cut to this many characters, to stay within DynamoDB's key size
#: limits; a longer name is found by prefix and then checked in full on the study.
TOKEN_CHARS = 200
CLAIMS = "CLAIMS"

_SKIPPED = {"StudyInstanceUID", "SeriesInstanceUID", "ModalitiesInStudy", *NAME_ATTRIBUTES}
#: Attributes kept as plain columns on study and series items (as SQLite's tables do).
STUDY_KEYWORDS = tuple(
    a.keyword
    for a in ATTRIBUTES
    if a.level == Level.STUDY and a.matchable and a.keyword not in _SKIPPED
)
SERIES_KEYWORDS = tuple(
    a.keyword
    for a in ATTRIBUTES
    if a.level == Level.SERIES and a.matchable and a.keyword not in _SKIPPED
)

_INDEXES = (
    ("by_uid", "all_k", "uid", "S", "ALL"),
    ("by_patient_id", "pid_k", "uid", "S", "ALL"),
    ("by_accession", "acc_k", "uid", "S", "ALL"),
    ("by_date", "date_k", "date_s", "S", "ALL"),
    ("tokens", "tk", "ts", "S", "KEYS_ONLY"),
    ("by_series", "se_k", "uid", "S", "KEYS_ONLY"),
    ("claims", "ck", "at", "N", "ALL"),
)


def table_definition(name: str) -> dict[str, Any]:
    """``CreateTable`` arguments for the index table (on-demand capacity)."""
    attributes = {"PK": "S", "SK": "S"}
    indexes = []
    for index, hash_key, range_key, range_type, projection in _INDEXES:
        attributes[hash_key] = "S"
        attributes[range_key] = range_type
        indexes.append(
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": range_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": projection},
            }
        )
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": k, "AttributeType": t} for k, t in attributes.items()
        ],
        "KeySchema": [
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": indexes,
    }


def create_table(client: DynamoDBClient, name: str) -> bool:
    """Create the index table and wait until it is active; False if it existed."""
    try:
        client.create_table(**table_definition(name))
    except client.exceptions.ResourceInUseException:
        return False
    client.get_waiter("table_exists").wait(TableName=name)
    return True


def study_pk(store: str, study: str) -> str:
    return f"{store}#STUDY#{study}"


def sop_pk(store: str, sop: str) -> str:
    return f"{store}#SOP#{sop}"


def series_sk(series: str) -> str:
    return f"SERIES#{series}"


def instance_sk(series: str, sop: str) -> str:
    return f"INST#{series}#{sop}"


def encode_value(value: str | int) -> dict[str, str]:
    return {"N": str(value)} if isinstance(value, int) else {"S": value}


def decode_value(value: dict[str, str]) -> str | int:
    return int(value["N"]) if "N" in value else value["S"]


@dataclass
class LevelState:
    """A study or series item as the write path reads, changes and writes it back.

    ``version`` is the item's optimistic-locking counter (0: not stored yet)."""

    uid: str
    columns: dict[str, str | int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    document: bytes = b"{}"
    instances: int = 0
    #: Study only: series UID -> its modality ("" when unknown).
    series: dict[str, str] = field(default_factory=dict)
    revision: int = 0
    version: int = 0

    def update(self, keywords: tuple[str, ...], attributes: dict[str, str]) -> None:
        """Take an instance's values; a value it lacks keeps the one already known."""
        for keyword in keywords:
            value = column_value(keyword, attributes.get(keyword))
            if value is not None:
                self.columns[keyword] = value

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({m for m in self.series.values() if m}))


def _compress(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def encode_level(store: str, study: str, state: LevelState, *, is_study: bool) -> Item:
    item: Item = {
        "PK": {"S": study_pk(store, study)},
        "SK": {"S": STUDY_SK if is_study else series_sk(state.uid)},
        "uid": {"S": state.uid},
        "doc": {"B": _compress(state.document)},
        "ni": {"N": str(state.instances)},
        "rev": {"N": str(state.revision)},
        "ver": {"N": str(state.version)},
    }
    if state.columns:
        item["cols"] = {"M": {k: encode_value(v) for k, v in state.columns.items()}}
    if not is_study:
        item["se_k"] = {"S": f"{store}#{state.uid}"}
        return item
    if state.names:
        item["names"] = {"M": {k: {"S": v} for k, v in state.names.items()}}
    if state.series:
        item["series"] = {"M": {k: {"S": v} for k, v in state.series.items()}}
    # Sparse index keys: the study is in an index only when it has the value.
    item["all_k"] = {"S": store}
    patient_id = state.columns.get("PatientID")
    if isinstance(patient_id, str):
        item["pid_k"] = {"S": f"{store}#{patient_id}"}
    accession = state.columns.get("AccessionNumber")
    if isinstance(accession, str):
        item["acc_k"] = {"S": f"{store}#{accession}"}
    date = state.columns.get("StudyDate")
    if isinstance(date, str):
        item["date_k"] = {"S": store}
        item["date_s"] = {"S": date}
    return item


def decode_level(item: Item) -> LevelState:
    return LevelState(
        uid=item["uid"]["S"],
        columns={k: decode_value(v) for k, v in item.get("cols", {}).get("M", {}).items()},
        names={k: v["S"] for k, v in item.get("names", {}).get("M", {}).items()},
        document=zlib.decompress(item["doc"]["B"]),
        instances=int(item["ni"]["N"]),
        series={k: v["S"] for k, v in item.get("series", {}).get("M", {}).items()},
        revision=int(item["rev"]["N"]),
        version=int(item["ver"]["N"]),
    )


def tokens(store: str, state: LevelState | None) -> dict[str, Item]:
    """The token items (by sort key) a study should have: one per name group and word,
    one per modality. ``None``: the study is gone, so it should have none."""
    if state is None:
        return {}
    out: dict[str, Item] = {}
    for attribute, value in state.names.items():
        for kind, full in name_rows(value):
            text = full[:TOKEN_CHARS]
            sk = f"TOK#PN#{attribute}#{kind}#{text}"
            out[sk] = {
                "tk": {"S": f"{store}#PN#{attribute}#{kind}#{text[0]}"},
                "ts": {"S": text},
            }
    for modality in state.modalities:
        out[f"TOK#MOD#{modality}"] = {
            "tk": {"S": f"{store}#MOD#{modality}"},
            "ts": {"S": state.uid},
        }
    return out
