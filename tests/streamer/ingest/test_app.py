"""The Faust application's adjustments to its Kafka client."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import InvalidRequestError, KafkaError, UnknownError

from streamer.ingest.app import rejoin_on_sync_refusal


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
