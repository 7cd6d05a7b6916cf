"""Blocking access to the DynamoDB index table: paging, batching, and one place where
AWS errors become :class:`~service.errors.BackendUnavailable`.

Call these methods from worker threads only. The boto3 client is thread-safe; botocore
retries throttling and transient errors itself (``standard`` mode, with backoff), so an
error that reaches us is one to report, not to retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import BackendUnavailable
from service.index.dynamodb_schema import Item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["Table", "make_client", "table_name"]

_MISSING = {"ResourceNotFoundException"}
_DENIED = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
}
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}


def make_client(region: str, endpoint_url: str = "", *, pool: int = 32) -> DynamoDBClient:
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 8},
        max_pool_connections=pool,
        connect_timeout=5,
        read_timeout=20,
    )
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=endpoint_url or None, config=config
    )
    return client


class Table:
    """The index table, with AWS errors turned into ones the service reports."""

    def __init__(self, client: DynamoDBClient, name: str) -> None:
        self.client = client
        self.name = name

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _MISSING:
                raise BackendUnavailable(
                    f"DynamoDB table {self.name!r} does not exist (or is not active yet); "
                    "create it with `python -m service init-aws` (see the README)"
                ) from exc
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _DENIED or status == 403:
                raise BackendUnavailable(
                    f"access to DynamoDB table {self.name!r} was denied ({code}): {message}"
                ) from exc
            if code in _THROTTLED:
                raise BackendUnavailable(
                    f"DynamoDB table {self.name!r} is throttling requests even after "
                    f"retries ({code}); try again later"
                ) from exc
            if code.startswith("InternalServer") or code == "ServiceUnavailable":
                raise BackendUnavailable(f"DynamoDB failed ({code}): {message}") from exc
            raise
        except BotoCoreError as exc:
            raise BackendUnavailable(f"cannot use DynamoDB table {self.name!r}: {exc}") from exc

    def get(self, pk: str, sk: str) -> Item | None:
        with self.errors():
            answer = self.client.get_item(
                TableName=self.name,
                Key={"PK": {"S": pk}, "SK": {"S": sk}},
                ConsistentRead=True,
            )
        item: Item | None = answer.get("Item")
        return item

    def query(self, **kwargs: Any) -> Iterator[Item]:
        """Every item of a Query, page after page (``Limit`` is the page size)."""
        kwargs["TableName"] = self.name
        while True:
            with self.errors():
                answer = self.client.query(**kwargs)
            yield from answer.get("Items", [])
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def partition(
        self,
        pk: str,
        prefix: str,
        *,
        projection: str | None = None,
        names: dict[str, str] | None = None,
    ) -> Iterator[Item]:
        """Items of one partition whose sort key starts with ``prefix``, in key order."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        if prefix:  # DynamoDB refuses an empty key value, even as a prefix
            kwargs["KeyConditionExpression"] += " AND begins_with(SK, :prefix)"
            kwargs["ExpressionAttributeValues"][":prefix"] = {"S": prefix}
        if projection:
            kwargs["ProjectionExpression"] = projection
        if names:
            kwargs["ExpressionAttributeNames"] = names
        return self.query(**kwargs)

    def batch_get(self, keys: list[tuple[str, str]]) -> list[Item]:
        """The items with these keys that exist (any order)."""
        found: list[Item] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 100):
            request: Any = {
                self.name: {
                    "Keys": [
                        {"PK": {"S": pk}, "SK": {"S": sk}} for pk, sk in unique[start : start + 100]
                    ],
                    "ConsistentRead": True,
                }
            }
            while request:
                with self.errors():
                    answer = self.client.batch_get_item(RequestItems=request)
                found.extend(answer.get("Responses", {}).get(self.name, []))
                request = answer.get("UnprocessedKeys") or None
        return found

    def put_if_absent(self, item: Item) -> bool:
        with self.errors():
            try:
                self.client.put_item(
                    TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(PK)"
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                return False
        return True

    def delete_if(
        self, pk: str, sk: str, condition: str, values: Item, names: dict[str, str]
    ) -> bool:
        with self.errors():
            try:
                self.client.delete_item(
                    TableName=self.name,
                    Key={"PK": {"S": pk}, "SK": {"S": sk}},
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ExpressionAttributeNames=names,
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                return False
        return True

    def transact(self, actions: list[Item]) -> bool:
        """Write ``actions`` all or none; False when a condition failed or another
        transaction got in the way (read again and retry)."""
        with self.errors():
            try:
                self.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
            except self.client.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code", "") for r in exc.response.get("CancellationReasons", [])]
                if all(
                    r in ("None", "", "ConditionalCheckFailed", "TransactionConflict")
                    for r in reasons
                ):
                    return False
                if any(r in ("ThrottlingError", "ProvisionedThroughputExceeded") for r in reasons):
                    return False
                raise
            except self.client.exceptions.TransactionConflictException:
                return False
        return True


def table_name(url: str) -> str:
    """The table of a ``dynamodb://table`` URL."""
    name = url.removeprefix("dynamodb://").strip("/")
    if not url.startswith("dynamodb://") or not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", name):
        raise ValueError(f"not a dynamodb://table URL (table: 3-255 of A-Z a-z 0-9 _ . -): {url!r}")
    return name
