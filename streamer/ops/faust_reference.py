"""A Faust agent that does nothing with its input: the framework's own ceiling, the second
reference of ``shelfcast bench``.

The bare aiokafka reference says what the broker and client can deliver; this one says what a
Faust agent costs before any work is done. It consumes the input topics from the beginning in
a fresh consumer group, in the worker's own micro-batches (``consume``, with the same batch size
and window), and writes one JSON object to a file (Faust takes over stdout): the
messages/s from its first batch until it has seen ``n`` messages.

Run by ``shelfcast bench`` as ``python -m streamer.ops.faust_reference N FILE``, with the settings
in the environment. Its app id needs its Faust leader topic to exist: the bench creates it on
the embedded broker up front, as it does the worker's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import faust

from streamer.config.settings import Settings
from streamer.ingest.app import create_app, tune_gc
from streamer.ingest.microbatch import consume

__all__ = ["APP_ID", "main"]

APP_ID = "shelfcast-faust-reference"


def main(n: int, out: Path) -> None:
    settings = Settings.from_env()
    app = create_app(settings)
    inputs = app.topic(
        settings.kafka.topics["orders"],
        settings.kafka.topics["inventory"],
        key_serializer="raw",
        value_serializer="raw",
    )
    seen, first, started = 0, 0, 0.0

    async def count(events: list[faust.EventT]) -> None:
        nonlocal seen, first, started
        if not seen:  # timed like the worker: from its first batch, connected and assigned
            started, first = time.perf_counter(), len(events)
        seen += len(events)
        if seen >= n:
            rate = (seen - first) / max(time.perf_counter() - started, 1e-9)
            out.write_text(json.dumps({"messages": seen, "messages_per_second": rate}))
            os._exit(0)  # nothing to commit or shut down gently: the group is thrown away

    @app.agent(inputs)
    async def nothing(stream: faust.StreamT) -> None:
        kafka = settings.kafka
        await consume(stream, kafka.batch_size, kafka.batch_within, count)

    tune_gc()
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
