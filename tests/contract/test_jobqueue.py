"""JobQueue contract: every backend keeps jobs durably and hands each attempt out once."""

from __future__ import annotations

import asyncio
import time

from service.jobs.base import Forward, JobQueue

JOB = Forward(store="default", sop_uid="1.2.3", destination="PACS")


async def test_enqueued_job_is_claimed_once_with_its_data(job_queue: JobQueue) -> None:
    job_id = await job_queue.enqueue(JOB)
    record = await job_queue.claim(lease=60)
    assert record is not None
    assert (record.id, record.job, record.state, record.attempts) == (job_id, JOB, "running", 1)
    assert await job_queue.claim(lease=60) is None  # leased: nobody else gets it


async def test_complete_records_outcome(job_queue: JobQueue) -> None:
    job_id = await job_queue.enqueue(JOB)
    record = await job_queue.claim(lease=60)
    assert record is not None
    assert await job_queue.complete(job_id, record.attempts, "sent to PACS: 0x0000")
    done = await job_queue.get(job_id)
    assert done is not None and done.state == "done" and done.message == "sent to PACS: 0x0000"
    assert [r.id for r in await job_queue.list("done")] == [job_id]
    assert await job_queue.claim(lease=60) is None


async def test_future_job_is_not_due(job_queue: JobQueue) -> None:
    await job_queue.enqueue(JOB, run_at=time.time() + 60)
    assert await job_queue.claim(lease=60) is None
    assert len(await job_queue.list("pending")) == 1


async def test_failed_attempt_retries_at_given_time(job_queue: JobQueue) -> None:
    job_id = await job_queue.enqueue(JOB)
    first = await job_queue.claim(lease=60)
    assert first is not None
    assert await job_queue.fail(job_id, first.attempts, "connection refused", time.time() + 0.2)
    assert await job_queue.claim(lease=60) is None
    await asyncio.sleep(0.3)
    second = await job_queue.claim(lease=60)
    assert second is not None and second.attempts == 2 and second.message == "connection refused"


async def test_dead_letter_list_and_retry(job_queue: JobQueue) -> None:
    job_id = await job_queue.enqueue(JOB)
    record = await job_queue.claim(lease=60)
    assert record is not None
    assert await job_queue.fail(job_id, record.attempts, "association rejected", None)
    [dead] = await job_queue.list("dead")
    assert dead.id == job_id and dead.message == "association rejected"
    assert await job_queue.claim(lease=60) is None
    assert await job_queue.retry(job_id)
    assert not await job_queue.retry(job_id)  # no longer dead
    again = await job_queue.claim(lease=60)
    assert again is not None and again.id == job_id and again.attempts == 1


async def test_expired_lease_is_claimed_again_and_stale_worker_cannot_finish(
    job_queue: JobQueue,
) -> None:
    job_id = await job_queue.enqueue(JOB)
    first = await job_queue.claim(lease=0.1)
    assert first is not None
    await asyncio.sleep(0.2)
    second = await job_queue.claim(lease=60)
    assert second is not None and second.id == job_id and second.attempts == 2
    assert not await job_queue.complete(job_id, first.attempts)  # the lapsed worker
    assert not await job_queue.fail(job_id, first.attempts, "late", None)
    assert await job_queue.complete(job_id, second.attempts)


async def test_concurrent_claims_never_share_a_job(job_queue: JobQueue) -> None:
    ids = {await job_queue.enqueue(JOB) for _ in range(20)}
    claimed = await asyncio.gather(*(job_queue.claim(lease=60) for _ in range(30)))
    got = [r.id for r in claimed if r is not None]
    assert sorted(got) == sorted(ids)


async def test_unknown_job_is_not_retried(job_queue: JobQueue) -> None:
    assert not await job_queue.retry("nope")
    assert await job_queue.get("nope") is None
    assert await job_queue.list() == []
