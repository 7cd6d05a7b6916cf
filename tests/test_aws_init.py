"""``python -m service init-aws`` against a moto server: the bucket, made ready, twice."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import boto3
import pytest

from service.aws_init import ABORT_RULE_ID
from tests.aws import MotoServer, unique_name
from tests.server import free_port


def init_aws(endpoint: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    env["DICOMWEB_S3_ENDPOINT_URL"] = endpoint
    env.update({f"DICOMWEB_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "service", "init-aws"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=moto.endpoint)


def test_creates_a_ready_bucket_and_is_idempotent(moto: MotoServer, s3: Any) -> None:
    bucket = unique_name("init")
    first = init_aws(moto.endpoint, storage=f"s3://{bucket}/dicom")
    assert first.returncode == 0, first.stderr
    assert f"bucket {bucket}: created in us-east-1" in first.stdout
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules == [
        {
            "ID": ABORT_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": "dicom/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"],
        True,
    )
    # someone else's rule is kept, ours is not duplicated
    other = {
        "ID": "expire-logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 30},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, other]}
    )
    second = init_aws(moto.endpoint, storage=f"s3://{bucket}/dicom")
    assert second.returncode == 0, second.stderr
    assert f"bucket {bucket}: exists" in second.stdout
    ids = [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]]
    assert sorted(ids) == sorted([ABORT_RULE_ID, "expire-logs"])


def test_kms_encryption_and_another_region(moto: MotoServer, s3: Any) -> None:
    bucket = unique_name("init")
    done = init_aws(
        moto.endpoint,
        storage=f"s3://{bucket}",
        aws_region="eu-west-1",
        s3_sse="aws:kms",
        s3_kms_key_id="alias/dicom",
    )
    assert done.returncode == 0, done.stderr
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": "alias/dicom",
    }
    [lifecycle] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle["Filter"] == {"Prefix": ""}


def test_nothing_to_do_without_aws_backends(moto: MotoServer) -> None:
    done = init_aws(moto.endpoint)
    assert done.returncode == 0
    assert done.stdout.startswith("nothing to do")


def test_unreachable_endpoint_fails_with_a_message(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    done = init_aws(f"http://127.0.0.1:{free_port()}", storage=f"s3://{unique_name('init')}")
    assert done.returncode == 1
    assert "init-aws failed: Could not connect to the endpoint URL" in done.stderr


def test_creates_the_index_and_jobs_tables_and_is_idempotent(moto: MotoServer) -> None:
    index, jobs = unique_name("index"), unique_name("jobs")
    settings = {
        "index": f"dynamodb://{index}",
        "jobs": f"dynamodb://{jobs}",
        "dynamodb_endpoint_url": moto.endpoint,
    }
    first = init_aws(moto.endpoint, **settings)
    assert first.returncode == 0, first.stderr
    assert f"table {index}: created" in first.stdout
    assert f"jobs table {jobs}: created" in first.stdout
    ddb = boto3.client("dynamodb", endpoint_url=moto.endpoint)
    described = ddb.describe_table(TableName=jobs)["Table"]
    assert {i["IndexName"] for i in described["GlobalSecondaryIndexes"]} == {"due", "by_state"}
    again = init_aws(moto.endpoint, **settings)
    assert again.returncode == 0, again.stderr
    assert f"jobs table {jobs}: exists" in again.stdout
