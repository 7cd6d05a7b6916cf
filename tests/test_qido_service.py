"""QidoService beyond what the HTTP tests show: a long page of results is shaped in
turns, so searches queued behind it are not held for the whole page."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from service.core import qido
from service.core.qido import QidoService, parse_search
from service.core.search import Level, Query, SearchHit, SearchPage


class _Index:
    """Answers every search with ``count`` studies."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def search(self, store: str, query: Query) -> SearchPage:
        hits = [
            SearchHit(
                study_uid=f"1.2.3.{n}",
                study=b'{"0020000D":{"vr":"UI","Value":["1.2.3.%d"]}}' % n,
            )
            for n in range(self.count)
        ]
        return SearchPage(hits=hits, more=False)


async def test_a_long_page_lets_other_tasks_run_while_it_is_shaped() -> None:
    count = 500  # several batches
    service = QidoService(_Index(count), store="default")  # type: ignore[arg-type]
    search = parse_search([], level=Level.STUDY, default_limit=count, max_limit=count)
    shaped: list[Any] = []
    real_shaper = qido._Shaper

    class Counting(real_shaper):  # type: ignore[misc,valid-type]
        def __call__(self, hit: SearchHit) -> bytes:
            shaped.append(hit.study_uid)
            return super().__call__(hit)

    qido._Shaper = Counting  # type: ignore[misc]
    try:
        seen_at: list[int] = []

        async def other_request() -> None:
            while len(seen_at) < 3:
                seen_at.append(len(shaped))
                await asyncio.sleep(0)

        other = asyncio.create_task(other_request())
        results, more, _ = await service.search(search, "http://example/dicom-web")
        await other
    finally:
        qido._Shaper = real_shaper  # type: ignore[misc]

    assert len(results) == count and not more
    uids = [json.loads(r)["0020000D"]["Value"][0] for r in results]
    assert uids == [f"1.2.3.{n}" for n in range(count)]  # all of them, in order
    # The other task ran between batches, before the page was done.
    assert any(0 < n < count for n in seen_at)
