"""Open the job queue the settings name."""

from __future__ import annotations

from service.config import Settings
from service.jobs.base import JobQueue
from service.jobs.sqlite import SqliteJobQueue

__all__ = ["open_jobs"]


async def open_jobs(settings: Settings) -> JobQueue:
    url = settings.jobs_url
    if url.startswith("sqlite:///"):
        queue = SqliteJobQueue.from_url(url)
        await queue.open()
        return queue
    if url.startswith("dynamodb://"):
        # boto3 is imported only when DynamoDB is chosen.
        from service.jobs.dynamodb import DynamoDBJobQueue

        shared = DynamoDBJobQueue.from_url(
            url, region=settings.aws_region, endpoint_url=settings.dynamodb_endpoint_url
        )
        await shared.open()
        return shared
    raise ValueError(f"unsupported job queue URL {url!r} (supported: sqlite:///, dynamodb://)")
