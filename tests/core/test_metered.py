"""MeteredStream: the usage of a streamed answer charged once it ends, whether its chunks
are iterated or forwarded to a writer by a StreamFanout's producer."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from promptrelay.core.coalesce import StreamFanout
from promptrelay.core.metered import MeteredStream
from promptrelay.core.sse import encode_event

START = {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}
CHUNKS = [
    encode_event("message_start", START),
    encode_event("content_block_delta", {"type": "content_block_delta", "index": 0}),
    encode_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}}),
    encode_event("message_stop", {"type": "message_stop"}),
]


async def _source() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


def _metered(charged: list[dict[str, Any]], output: bool) -> MeteredStream:
    async def charge(usage: dict[str, Any]) -> None:
        charged.append(usage)

    subscription = StreamFanout(_source).subscribe()
    return MeteredStream(subscription, charge, output=output)


@pytest.mark.parametrize(
    ("output", "usage"),
    [
        (True, {"input_tokens": 7, "output_tokens": 5}),
        (False, {"input_tokens": 7, "output_tokens": 1}),
    ],
)
async def test_forwarded_and_iterated_chunks_are_charged_alike(output, usage) -> None:
    iterated: list[dict[str, Any]] = []
    assert [chunk async for chunk in _metered(iterated, output)] == CHUNKS
    forwarded: list[dict[str, Any]] = []
    stream = _metered(forwarded, output)
    written: list[bytes] = []

    def write(chunk: bytes) -> bool:
        written.append(chunk)
        return True

    assert stream.forward is not None
    while True:
        await stream.forward(write)
        try:
            written.append(await anext(stream))
        except StopAsyncIteration:
            break
    assert written == CHUNKS
    assert iterated == forwarded == [usage]


async def test_a_stream_that_cannot_forward_offers_no_forward() -> None:
    async def charge(usage: dict[str, Any]) -> None:
        raise AssertionError("nothing to charge")

    assert MeteredStream(_source(), charge).forward is None


def test_a_metered_stream_is_freed_without_the_collector() -> None:
    """It holds the whole stream (the subscription, the fanout's items): a reference cycle
    through it would keep every finished stream until a collection found it."""

    class Forwarding:
        def __init__(self) -> None:
            self.items = [b"x" * 1024]

        async def forward(self, write: Any) -> None:
            return None

    async def charge(usage: dict[str, Any]) -> None:
        return None

    gc.collect()
    gc.disable()
    try:
        stream = MeteredStream(Forwarding(), charge)  # type: ignore[arg-type]
        assert stream.forward is not None
        del stream
        assert gc.collect() == 0
    finally:
        gc.enable()
