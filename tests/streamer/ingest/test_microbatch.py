"""Micro-batches: full at ``size``, due ``within`` seconds after both their oldest event and
the taker's call, and the events that arrive while a batch is processed gathered into the
next one."""

from __future__ import annotations

import asyncio

from streamer.ingest.microbatch import MicroBatches


def test_a_full_batch_is_taken_at_once() -> None:
    async def scenario() -> list[int]:
        batches: MicroBatches[int] = MicroBatches(size=3, within=3600)
        for event in (1, 2, 3):
            await batches.put(event)
        return await asyncio.wait_for(batches.take(), 5)

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_a_partial_batch_waits_its_window_and_takes_what_arrives_meanwhile() -> None:
    async def scenario() -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        batches: MicroBatches[int] = MicroBatches(size=100, within=0.05)
        await batches.put(1)
        started = loop.time()

        async def later() -> None:
            await asyncio.sleep(0.01)
            await batches.put(2)  # joins the batch its predecessor opened

        adding = asyncio.create_task(later())
        batch = await batches.take()
        await adding
        return batch, loop.time() - started

    batch, waited = asyncio.run(scenario())
    assert batch == [1, 2]
    assert waited >= 0.04  # not taken before its window passed


def test_what_arrives_during_a_batch_forms_the_next_one_in_order() -> None:
    async def scenario() -> list[list[int]]:
        batches: MicroBatches[int] = MicroBatches(size=100, within=0.02)
        taken: list[list[int]] = []

        async def process() -> None:
            for _ in range(2):
                taken.append(await batches.take())
                await asyncio.sleep(0.15)  # a slow batch: Redis, the broker

        processing = asyncio.create_task(process())
        for event in range(1, 6):
            await batches.put(event)
            await asyncio.sleep(0.04 if event == 1 else 0.01)
        await processing
        return taken

    # 1 is due alone; 2-5 arrive while it is processed and are taken together after it
    assert asyncio.run(scenario()) == [[1], [2, 3, 4, 5]]


def test_put_waits_while_a_whole_batch_is_waiting() -> None:
    async def scenario() -> tuple[bool, list[int], list[int]]:
        batches: MicroBatches[int] = MicroBatches(size=2, within=3600)
        await batches.put(1)
        await batches.put(2)
        third = asyncio.create_task(batches.put(3))
        await asyncio.sleep(0.01)
        blocked = not third.done()
        first = await batches.take()
        await asyncio.wait_for(third, 5)
        batches.within = 0.01
        return blocked, first, await batches.take()

    blocked, first, second = asyncio.run(scenario())
    assert blocked
    assert (first, second) == ([1, 2], [3])
