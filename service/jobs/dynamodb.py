"""The DynamoDB JobQueue: durable jobs shared by every replica (``dynamodb://table``).

One item per job, keyed by its id. Two sparse secondary indexes answer the queue's
questions without a scan:

* ``due`` (``q``, ``run_at``): the claimable jobs, pending or running, by the time they
  are due or their lease ends. ``q`` exists only while a job is claimable, so done and
  dead jobs drop out of it.
* ``by_state`` (``state``, ``created_at``): the operator's listing of one state.

Every state change is a conditional update on the job's own item (its state and its
attempt count), so two workers never both take one attempt of a job, and a worker whose
lease ran out can no longer complete or fail it. Indexes are eventually consistent: a
job may become claimable a moment after it is due, never twice.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import msgspec
from botocore.exceptions import ClientError

from service.index.dynamodb_table import Table, make_client, table_name
from service.jobs.base import Job, JobQueue, JobRecord, JobState, job_decoder

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDBJobQueue", "create_jobs_table"]

_CLAIMABLE = "Q"
#: Candidates read per claim; a claim that loses them all to other workers reads again.
_CANDIDATES = 25


def create_jobs_table(client: DynamoDBClient, name: str) -> bool:
    """Create the jobs table and wait until it is active; False if it existed."""
    try:
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "q", "AttributeType": "S"},
                {"AttributeName": "run_at", "AttributeType": "N"},
                {"AttributeName": "state", "AttributeType": "S"},
                {"AttributeName": "created_at", "AttributeType": "N"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "due",
                    "KeySchema": [
                        {"AttributeName": "q", "KeyType": "HASH"},
                        {"AttributeName": "run_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
                {
                    "IndexName": "by_state",
                    "KeySchema": [
                        {"AttributeName": "state", "KeyType": "HASH"},
                        {"AttributeName": "created_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
        )
    except client.exceptions.ResourceInUseException:
        return False
    client.get_waiter("table_exists").wait(TableName=name)
    return True


def _record(item: dict[str, Any]) -> JobRecord:
    state: JobState = item["state"]["S"]
    return JobRecord(
        id=item["id"]["S"],
        job=job_decoder().decode(item["job"]["S"]),
        state=state,
        attempts=int(item["attempts"]["N"]),
        run_at=float(item["run_at"]["N"]),
        created_at=float(item["created_at"]["N"]),
        updated_at=float(item["updated_at"]["N"]),
        message=item.get("message", {}).get("S", ""),
    )


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value)}


class DynamoDBJobQueue(JobQueue):
    def __init__(self, table: str, *, region: str, endpoint_url: str = "") -> None:
        self._table = Table(make_client(region, endpoint_url), table)
        # Claims from one process take turns: they would only race each other for the
        # same candidates. Other processes are kept apart by the conditional updates.
        self._claiming = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, *, region: str, endpoint_url: str = "") -> DynamoDBJobQueue:
        return cls(table_name(url), region=region, endpoint_url=endpoint_url)

    @property
    def _client(self) -> DynamoDBClient:
        return self._table.client

    async def open(self) -> None:
        def describe() -> None:
            with self._table.errors():
                self._client.describe_table(TableName=self._table.name)

        await anyio.to_thread.run_sync(describe)

    async def close(self) -> None:
        self._client.close()

    def _update(self, job_id: str, **kwargs: Any) -> dict[str, Any] | None:
        """One conditional update; None when its condition does not hold."""
        with self._table.errors():
            try:
                answer = self._client.update_item(
                    TableName=self._table.name,
                    Key={"id": {"S": job_id}},
                    ReturnValues="ALL_NEW",
                    **kwargs,
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    return None
                raise
        return dict(answer["Attributes"])

    async def enqueue(self, job: Job, *, run_at: float | None = None) -> str:
        now = time.time()
        job_id = uuid.uuid4().hex
        item = {
            "id": {"S": job_id},
            "job": {"S": msgspec.json.encode(job).decode()},
            "state": {"S": "pending"},
            "attempts": {"N": "0"},
            "run_at": _n(now if run_at is None else run_at),
            "created_at": _n(now),
            "updated_at": _n(now),
            "q": {"S": _CLAIMABLE},
        }

        def put() -> None:
            with self._table.errors():
                self._client.put_item(TableName=self._table.name, Item=item)

        await anyio.to_thread.run_sync(put)
        return job_id

    async def claim(self, lease: float) -> JobRecord | None:
        async with self._claiming:
            return await anyio.to_thread.run_sync(self._claim, lease)

    def _claim(self, lease: float) -> JobRecord | None:
        now = time.time()
        with self._table.errors():
            answer = self._client.query(
                TableName=self._table.name,
                IndexName="due",
                KeyConditionExpression="q = :q AND run_at <= :now",
                ExpressionAttributeValues={":q": {"S": _CLAIMABLE}, ":now": _n(now)},
                Limit=_CANDIDATES,
            )
        for candidate in answer.get("Items", []):
            taken = self._update(
                candidate["id"]["S"],
                UpdateExpression=(
                    "SET #state = :running, attempts = attempts + :one, run_at = :until, "
                    "updated_at = :now"
                ),
                ConditionExpression="q = :q AND run_at <= :now",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":running": {"S": "running"},
                    ":one": {"N": "1"},
                    ":until": _n(now + lease),
                    ":now": _n(now),
                    ":q": {"S": _CLAIMABLE},
                },
            )
            if taken is not None:
                return _record(taken)
        return None

    def _finish(self, job_id: str, attempt: int, update: str, values: dict[str, Any]) -> bool:
        return (
            self._update(
                job_id,
                UpdateExpression=update,
                ConditionExpression="#state = :running AND attempts = :attempt",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":running": {"S": "running"},
                    ":attempt": {"N": str(attempt)},
                    ":now": _n(time.time()),
                    **values,
                },
            )
            is not None
        )

    async def complete(self, job_id: str, attempt: int, message: str = "") -> bool:
        update = "SET #state = :done, message = :message, updated_at = :now REMOVE q"
        values = {":done": {"S": "done"}, ":message": {"S": message}}
        return await anyio.to_thread.run_sync(self._finish, job_id, attempt, update, values)

    async def fail(self, job_id: str, attempt: int, error: str, retry_at: float | None) -> bool:
        values: dict[str, Any] = {":message": {"S": error}}
        if retry_at is None:
            update = "SET #state = :dead, message = :message, updated_at = :now REMOVE q"
            values[":dead"] = {"S": "dead"}
        else:
            update = (
                "SET #state = :pending, message = :message, updated_at = :now, run_at = :retry_at"
            )
            values |= {":pending": {"S": "pending"}, ":retry_at": _n(retry_at)}
        return await anyio.to_thread.run_sync(self._finish, job_id, attempt, update, values)

    async def get(self, job_id: str) -> JobRecord | None:
        def read() -> JobRecord | None:
            with self._table.errors():
                answer = self._client.get_item(
                    TableName=self._table.name, Key={"id": {"S": job_id}}, ConsistentRead=True
                )
            item = answer.get("Item")
            return _record(dict(item)) if item else None

        return await anyio.to_thread.run_sync(read)

    async def list(self, state: JobState | None = None, limit: int = 1000) -> list[JobRecord]:
        def read() -> list[JobRecord]:
            with self._table.errors():
                if state is not None:
                    pages = self._client.get_paginator("query").paginate(
                        TableName=self._table.name,
                        IndexName="by_state",
                        KeyConditionExpression="#state = :state",
                        ExpressionAttributeNames={"#state": "state"},
                        ExpressionAttributeValues={":state": {"S": state}},
                        PaginationConfig={"MaxItems": limit},
                    )
                else:  # every job: the operator's rare full listing
                    pages = self._client.get_paginator("scan").paginate(TableName=self._table.name)
                items = [dict(i) for page in pages for i in page.get("Items", [])]
            records = sorted((_record(i) for i in items), key=lambda r: (r.created_at, r.id))
            return records[:limit]

        return await anyio.to_thread.run_sync(read)

    async def retry(self, job_id: str) -> bool:
        def revive() -> bool:
            now = time.time()
            return (
                self._update(
                    job_id,
                    UpdateExpression=(
                        "SET #state = :pending, attempts = :zero, run_at = :now, "
                        "updated_at = :now, q = :q"
                    ),
                    ConditionExpression="#state = :dead",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":pending": {"S": "pending"},
                        ":dead": {"S": "dead"},
                        ":zero": {"N": "0"},
                        ":now": _n(now),
                        ":q": {"S": _CLAIMABLE},
                    },
                )
                is not None
            )

        return await anyio.to_thread.run_sync(revive)
