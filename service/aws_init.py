"""``python -m service init-aws``: create the AWS resources the settings name.

Two steps, each a no-op when its backend is not configured: the storage step makes the
S3 bucket of ``DICOMWEB_STORAGE=s3://...`` ready, the index step (:func:`create_table`)
the DynamoDB table of ``DICOMWEB_INDEX=dynamodb://...``. Both are idempotent: run the
command again at any time and it only fills in what is missing.

The bucket gets what the service relies on and nothing it does not need:

- a lifecycle rule that aborts multipart uploads left incomplete for a day (an upload
  whose abort never reached S3, e.g. a process killed mid-STOW, otherwise keeps its
  parts, billed, forever). Other rules on the bucket are kept.
- default encryption matching ``DICOMWEB_S3_SSE`` (and the KMS key), so that objects
  written by other tools are encrypted too.
- a public access block on all four settings: DICOM files must never be public.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.config import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["ABORT_RULE_ID", "create_bucket", "create_table", "init_aws"]

ABORT_RULE_ID = "dicomweb-abort-incomplete-multipart-uploads"
ABORT_AFTER_DAYS = 1

Report = Callable[[str], None]


def init_aws(settings: Settings, report: Report = print) -> None:
    """Create what the configured AWS backends need; report each step in words."""
    did_storage = create_bucket(settings, report)
    did_index = create_table(settings, report)
    did_jobs = create_jobs_table(settings, report)
    if not did_storage and not did_index and not did_jobs:
        report(
            "nothing to do: DICOMWEB_STORAGE is not s3://..., and neither DICOMWEB_INDEX "
            "nor DICOMWEB_JOBS is dynamodb://..."
        )


def create_bucket(settings: Settings, report: Report = print) -> bool:
    """Make the S3 bucket of an ``s3://`` storage URL ready. False when not S3."""
    if not settings.storage_url.startswith("s3://"):
        return False
    import boto3
    import botocore.exceptions

    from service.storage.s3 import error_code, parse_s3_url

    location = parse_s3_url(settings.storage_url)
    bucket = location.bucket
    s3: S3Client = boto3.session.Session().client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url or None,
    )
    try:
        s3.head_bucket(Bucket=bucket)
        report(f"bucket {bucket}: exists")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        if settings.aws_region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": settings.aws_region},  # type: ignore[typeddict-item]
            )
        report(f"bucket {bucket}: created in {settings.aws_region}")

    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    report(f"bucket {bucket}: public access blocked")

    if settings.s3_sse != "none":
        default: dict[str, Any] = {"SSEAlgorithm": settings.s3_sse}
        if settings.s3_sse == "aws:kms" and settings.s3_kms_key_id:
            default["KMSMasterKeyID"] = settings.s3_kms_key_id
        rule: Any = {"ApplyServerSideEncryptionByDefault": default}
        if settings.s3_sse == "aws:kms":
            rule["BucketKeyEnabled"] = True  # fewer KMS calls, lower cost
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
        report(f"bucket {bucket}: default encryption {settings.s3_sse}")

    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    ours: Any = {
        "ID": ABORT_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": f"{location.prefix}/" if location.prefix else ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_AFTER_DAYS},
    }
    kept = [r for r in rules if r.get("ID") != ABORT_RULE_ID]
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*kept, ours]}
    )
    report(
        f"bucket {bucket}: lifecycle rule {ABORT_RULE_ID} (abort incomplete multipart "
        f"uploads after {ABORT_AFTER_DAYS} day)"
    )
    return True


def create_table(settings: Settings, report: Report = print) -> bool:
    """Make the DynamoDB table of a ``dynamodb://`` index URL ready. False when not DynamoDB.

    The index step of init-aws; the table's definition lives with the index.
    """
    if not settings.index_url.startswith("dynamodb://"):
        return False
    from service.index.dynamodb import init_table  # boto3 only when chosen

    return init_table(settings, report)


def create_jobs_table(settings: Settings, report: Report = print) -> bool:
    """Make the DynamoDB table of a ``dynamodb://`` job queue URL ready. False when the
    job queue is not on DynamoDB."""
    if not settings.jobs_url.startswith("dynamodb://"):
        return False
    from service.index.dynamodb_table import Table, make_client, table_name
    from service.jobs import dynamodb

    name = table_name(settings.jobs_url)
    client = make_client(settings.aws_region, settings.dynamodb_endpoint_url)
    try:
        with Table(client, name).errors():
            created = dynamodb.create_jobs_table(client, name)
    finally:
        client.close()
    report(f"jobs table {name}: {'created' if created else 'exists'}")
    return True
