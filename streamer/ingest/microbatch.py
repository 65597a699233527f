"""Micro-batches that gather while the batch before them is processed.

Faust's ``take_events`` stops gathering while its caller holds a batch, so the framework's own
work on each event (90-120 µs here: its conductor, stream and sensors, one turn of the event
loop an event) came after the worker's waits on Redis and the broker instead of filling them.
``consume`` puts every event into ``MicroBatches`` as Faust delivers it, and one task at a time
takes a batch: at most ``size`` events, once the batch is full or ``within`` seconds after both
its oldest event and the taker's call. The window after each batch is ``take_events``' own; what
changed is that Faust keeps delivering while a batch is processed, so a burst's next batch is
full when the one before ends (docs/benchmark.md, "Micro-batches that gather").

>>> async def demo() -> list[list[int]]:
...     gathered = MicroBatches(size=2, within=0.01)
...     await gathered.put(1)
...     await gathered.put(2)
...     full = await gathered.take()  # at once: the batch is full
...     await gathered.put(3)
...     return [full, await gathered.take()]  # 3 alone, once its window passed
>>> asyncio.run(demo())
[[1, 2], [3]]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import faust

from streamer.ingest.retry import fatal

__all__ = ["MicroBatches", "consume"]

T = TypeVar("T")


class MicroBatches(Generic[T]):
    """Events waiting for their batch: at most ``size`` (``put`` waits for room, so the consumer
    buffers at most one batch ahead, as with ``take_events``). A ``put`` wakes the taker only
    when the first event arrives or the batch fills: not once an event."""

    def __init__(self, size: int, within: float) -> None:
        self.size, self.within = size, within
        self._events: list[T] = []
        self._oldest = 0.0  # when the oldest waiting event arrived (loop time)
        self._some, self._full, self._room = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._room.set()

    async def put(self, event: T) -> None:
        """Add ``event`` once fewer than ``size`` wait."""
        while not self._room.is_set():
            await self._room.wait()
        if not self._events:
            self._oldest = asyncio.get_running_loop().time()
            self._some.set()
        self._events.append(event)
        if len(self._events) >= self.size:
            self._full.set()
            self._room.clear()

    async def take(self) -> list[T]:
        """The next batch, in arrival order: once ``size`` events wait, or ``within`` seconds
        after both the oldest arrived and this call began. What arrived while the batch before
        was processed still gathers for ``within``: taken at once, each batch would hold only
        what Faust delivered meanwhile, and at a steady trickle the batches' fixed costs
        would outgrow the gain (measured: small batches, the input falling behind at 2,000
        orders/s)."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await self._some.wait()
        left = max(self._oldest, asked) + self.within - loop.time()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), left)
        batch, self._events = self._events, []
        self._some.clear()
        self._full.clear()
        self._room.set()
        return batch


async def consume(
    stream: faust.StreamT,
    size: int,
    within: float,
    handle: Callable[[list[faust.EventT]], Awaitable[None]],
) -> None:
    """Hand ``stream``'s events to ``handle`` in micro-batches, one batch at a time and in
    order, while the next gathers. A batch's events are acknowledged once ``handle`` returned:
    Faust commits only acknowledged offsets. A failure exits the process (``fatal``): Faust
    would restart the agent past the failed batch and those waiting, and Redis's offsets,
    moved past them by the batch's apply, would skip them for good after a restart."""
    manual = stream.noack()
    batches: MicroBatches[faust.EventT] = MicroBatches(size, within)

    async def drain() -> None:
        try:
            while True:
                events = await batches.take()
                await handle(events)
                for event in events:
                    await manual.ack(event)
        except Exception:
            fatal("processing a batch failed")

    draining = asyncio.create_task(drain())
    try:
        async for event in manual.events():
            await batches.put(event)
    finally:
        draining.cancel()  # a batch in flight stops, as the agent's own await of it did
        with contextlib.suppress(asyncio.CancelledError):
            await draining
