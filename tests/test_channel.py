"""The bounded channel that carries a STOW part's chunks to the part's task."""

from __future__ import annotations

import asyncio

import pytest

from service.core.channel import Channel, ChannelClosed


def test_items_arrive_in_order_then_none_after_close() -> None:
    async def main() -> list[int | None]:
        channel = Channel[int](2)
        got: list[int | None] = []

        async def consume() -> None:
            while True:
                item = await channel.receive()
                got.append(item)
                if item is None:
                    return

        consumer = asyncio.create_task(consume())
        for n in range(10):
            await channel.send(n)
        channel.close()
        await consumer
        return got

    assert asyncio.run(main()) == [*range(10), None]


def test_a_full_channel_makes_the_sender_wait() -> None:
    async def main() -> None:
        channel = Channel[int](2)
        await channel.send(1)
        await channel.send(2)
        third = asyncio.create_task(channel.send(3))
        await asyncio.sleep(0.01)
        assert not third.done()  # bounded: the producer waits for the consumer
        assert await channel.receive() == 1
        await asyncio.wait_for(third, 1)
        assert [await channel.receive(), await channel.receive()] == [2, 3]

    asyncio.run(main())


def test_close_wakes_a_waiting_receiver_and_keeps_queued_items() -> None:
    async def main() -> None:
        channel = Channel[str](4)
        waiting = asyncio.create_task(channel.receive())
        await asyncio.sleep(0.01)
        channel.close()
        assert await asyncio.wait_for(waiting, 1) is None

        queued = Channel[str](4)
        await queued.send("a")
        queued.close()
        assert await queued.receive() == "a"
        assert await queued.receive() is None

    asyncio.run(main())


def test_send_after_close_and_a_sender_waiting_at_close_are_refused() -> None:
    async def main() -> None:
        channel = Channel[int](1)
        await channel.send(1)
        blocked = asyncio.create_task(channel.send(2))
        await asyncio.sleep(0.01)
        channel.close()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(blocked, 1)
        with pytest.raises(ChannelClosed):
            await channel.send(3)
        assert await channel.receive() == 1  # what was queued is still delivered

    asyncio.run(main())


def test_a_cancelled_receiver_leaves_the_channel_usable() -> None:
    async def main() -> None:
        channel = Channel[int](1)
        waiting = asyncio.create_task(channel.receive())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await channel.send(7)  # no error from the cancelled waiter's future
        assert await channel.receive() == 7

    asyncio.run(main())


def test_a_channel_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError):
        Channel[int](0)
