"""Operator commands: ``python -m service jobs list [--state S]`` and
``python -m service jobs retry ID | --all-dead``."""

from __future__ import annotations

import sys
import time

from service.config import Settings
from service.jobs.backends import open_jobs
from service.jobs.base import JobState

__all__ = ["list_jobs", "retry_jobs"]


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def list_jobs(settings: Settings, state: JobState | None) -> int:
    jobs = await open_jobs(settings)
    try:
        records = await jobs.list(state)
    finally:
        await jobs.close()
    print(f"{'id':32}  {'state':7}  {'tries':>5}  {'updated':20}  job / last message")
    for r in records:
        job = r.job
        what = f"forward {job.sop_uid} to {job.destination}"
        print(f"{r.id:32}  {r.state:7}  {r.attempts:>5}  {_when(r.updated_at):20}  {what}")
        if r.message:
            print(f"{'':72}{r.message}")
    return 0


async def retry_jobs(settings: Settings, job_id: str | None, all_dead: bool) -> int:
    jobs = await open_jobs(settings)
    try:
        ids = [r.id for r in await jobs.list("dead")] if all_dead else [job_id or ""]
        failed = 0
        for one in ids:
            if await jobs.retry(one):
                print(f"{one}: pending again")
            else:
                print(f"{one}: not a dead job", file=sys.stderr)
                failed += 1
    finally:
        await jobs.close()
    return 1 if failed else 0
