"""A real moto server on a free loopback port, spoken to over HTTP by boto3.

The AWS backends are tested exactly as they run in production: boto3 clients with an
``endpoint_url``, real HTTP requests, real S3 and DynamoDB wire protocols. Nothing is
patched in-process. One server is shared by the test session; every test that needs a
bucket or table makes its own with a unique name, so tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.server import answers, free_port, spawn, terminate

# Dummy credentials: moto accepts any, and they keep boto3 from looking for real ones.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def unique_name(prefix: str) -> str:
    """A bucket- and table-safe name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class MotoServer:
    """moto's server as a child process on 127.0.0.1:<free port>."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        # moto's server, with DynamoDB's requests taking turns (see moto_server.py).
        args = [sys.executable, str(Path(__file__).with_name("moto_server.py"))]
        args += ["-H", "127.0.0.1", "-p", str(self.port)]
        env = {**os.environ, **AWS_ENV}
        self.proc = spawn(args, env, self.log, answers(self.endpoint + "/moto-api/"), "moto")
        return self

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def dynamodb_settings(moto: MotoServer, **more: str) -> dict[str, str]:
    """DICOMWEB_* settings for a service on a fresh DynamoDB table of ``moto``."""
    from service.index.dynamodb_schema import create_table
    from service.index.dynamodb_table import make_client

    table = unique_name("index")
    client = make_client("us-east-1", moto.endpoint)
    try:
        create_table(client, table)
    finally:
        client.close()
    settings = {"index": f"dynamodb://{table}", "dynamodb_endpoint_url": moto.endpoint, **more}
    return {f"DICOMWEB_{k.upper()}": v for k, v in settings.items()}


def aws_settings(moto: MotoServer) -> dict[str, str]:
    """DICOMWEB_* settings for a service on S3 (a fresh bucket) and DynamoDB (a fresh
    table) of ``moto``, the production configuration."""
    import boto3

    bucket = unique_name("blobs")
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return {
        **dynamodb_settings(moto),
        "DICOMWEB_STORAGE": f"s3://{bucket}/archive",
        "DICOMWEB_S3_ENDPOINT_URL": moto.endpoint,
        # The smallest part S3 takes, so that tests' larger instances use multipart.
        "DICOMWEB_S3_PART_SIZE": str(5 * 1024 * 1024),
    }


def aws_snapshot(env: dict[str, str]) -> dict[str, object]:
    """What a service on S3 + DynamoDB holds, in the shape of the embedded snapshot:
    every instance object's hash, every index row, claims, and uploads in progress."""
    import hashlib

    import boto3

    endpoint = env["DICOMWEB_S3_ENDPOINT_URL"]
    bucket, _, prefix = env["DICOMWEB_STORAGE"].removeprefix("s3://").partition("/")
    table = env["DICOMWEB_INDEX"].removeprefix("dynamodb://")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    files = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"].removeprefix(prefix + "/")
            if "/studies/" not in key:
                continue  # caches and large metadata documents, not instances
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            files[key] = hashlib.sha256(body).hexdigest()
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    items = [
        i for page in ddb.get_paginator("scan").paginate(TableName=table) for i in page["Items"]
    ]
    rows = sorted(
        (i["sop"]["S"], i["key"]["S"], i["sha"]["S"])
        for i in items
        if i["SK"]["S"].startswith("INST#")
    )
    claims = sum(1 for i in items if i["SK"]["S"] == "CLAIM")
    return {
        "files": dict(sorted(files.items())),
        "rows": rows,
        "claims": claims,
        "temp": sorted(u["Key"] for u in uploads),
    }
