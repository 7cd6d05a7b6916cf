"""The moto server the tests use keeps DynamoDB transactions isolated, as DynamoDB does:
the AWS tests of concurrent commits (two workers storing into one study) rely on it."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws import MotoServer, unique_name

#: Transactions that succeed, from one thread, while others keep failing.
WRITES = 60
FAILING_THREADS = 3
#: Items in the table from the start. moto copies the whole table when a transaction
#: begins; a bigger table keeps each transaction, and its rollback's window, longer.
FILLER = 300


def _client(moto: MotoServer):  # type: ignore[no-untyped-def]
    return boto3.client("dynamodb", endpoint_url=moto.endpoint, region_name="us-east-1")


def _put(table: str, pk: str, **condition: object) -> dict[str, object]:
    return {"Put": {"TableName": table, "Item": {"PK": {"S": pk}}, **condition}}


def _keep_failing(moto: MotoServer, table: str, stop: threading.Event, failed: list[int]) -> None:
    """Transactions whose condition never holds: each is cancelled, as when a commit
    finds that another writer got there first."""
    client = _client(moto)
    never = {
        "ConditionExpression": "attribute_not_exists(PK)",  # the item exists
    }
    while not stop.is_set():
        with pytest.raises(ClientError, match="TransactionCanceled"):
            client.transact_write_items(
                TransactItems=[_put(table, "filler-0", **never), _put(table, "never")]
            )
        failed.append(1)


def test_a_cancelled_transaction_undoes_no_one_elses_writes(moto: MotoServer) -> None:
    table = unique_name("isolation")
    client = _client(moto)
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, FILLER, 25):
        requests = [
            {"PutRequest": {"Item": {"PK": {"S": f"filler-{n}"}, "pad": {"S": "x" * 200}}}}
            for n in range(start, min(start + 25, FILLER))
        ]
        client.batch_write_item(RequestItems={table: requests})
    stop, failed = threading.Event(), []
    failing = [
        threading.Thread(target=_keep_failing, args=(moto, table, stop, failed))
        for _ in range(FAILING_THREADS)
    ]
    for thread in failing:
        thread.start()
    try:
        for n in range(WRITES):  # each acknowledged
            client.transact_write_items(
                TransactItems=[_put(table, f"w-{n}a"), _put(table, f"w-{n}b")]
            )
    finally:
        stop.set()
        for thread in failing:
            thread.join()
    assert failed, "no transaction was cancelled: the test did not test anything"
    items = client.scan(TableName=table, Select="COUNT", ConsistentRead=True)["Count"]
    assert items == FILLER + 2 * WRITES
