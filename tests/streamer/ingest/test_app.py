"""The Faust application's adjustments to its Kafka client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import InvalidRequestError, KafkaError, UnknownError

from streamer.config.settings import Settings
from streamer.ingest.app import COMMIT_EVERY_NEVER, create_app, rejoin_on_sync_refusal


def refusing(error: Exception) -> type:
    class Rebalance:
        async def _send_sync_group_request(self, request: object) -> bytes | None:
            # aiokafka 0.14 raises what it does not expect as a KafkaError of the error's repr
            raise KafkaError(repr(error))

    rejoin_on_sync_refusal(Rebalance)
    wrapped = Rebalance._send_sync_group_request
    rejoin_on_sync_refusal(Rebalance)  # a second app in the process wraps nothing again
    assert Rebalance._send_sync_group_request is wrapped
    return Rebalance


def test_a_sync_group_refused_as_invalid_means_join_again() -> None:
    rebalance = refusing(InvalidRequestError())()
    assert asyncio.run(rebalance._send_sync_group_request(object())) is None


def test_any_other_sync_group_error_still_reaches_the_consumer() -> None:
    rebalance = refusing(UnknownError())()
    with pytest.raises(KafkaError, match="UnknownError"):
        asyncio.run(rebalance._send_sync_group_request(object()))


def test_a_rebalance_waits_for_the_batches_in_flight(tmp_path: Path) -> None:
    """Redis's offsets need each partition's records applied in offset order (docs/delivery.md,
    rule 2): Faust's revoke must wait until every record its streams handed out is
    acknowledged, so the old assignment's micro-batches finish before the new one starts."""
    settings = Settings.of(kafka_bootstrap_servers="127.0.0.1:9", home=tmp_path)
    assert create_app(settings).conf.stream_wait_empty  # never started: nothing connects


def test_faust_never_commits_inside_its_fetch_loop(tmp_path: Path) -> None:
    """A commit awaited between taking a record and recording its offset as read can outlast
    a rebalance; the stale read offset then drops the records the new assignment reads again
    (docs/delivery.md, rule 2). Commits run on the timer only."""
    settings = Settings.of(kafka_bootstrap_servers="127.0.0.1:9", home=tmp_path)
    consumer = create_app(settings).consumer
    assert consumer._commit_every == COMMIT_EVERY_NEVER > 10**15
