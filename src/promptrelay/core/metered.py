"""A streamed answer forwarded as it is, its usage read on the way and charged at the end.

`MeteredStream(chunks, charge, output=...)` iterates like `chunks`; once they end it
calls `charge(usage)`: input and cache tokens as `message_start` gave them, output
tokens from the last `message_delta` (a running total, never summed). Without
`output`, reading stops at `message_start`. When `chunks` can be forwarded
(`Subscription.forward`), so can the metered stream (its `forward` is None otherwise):
the writer is wrapped only while usage is still being read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from promptrelay.core.request import json_object_or_none
from promptrelay.core.sse import SseParser

__all__ = ["MeteredStream"]

Write = Callable[[bytes], bool]


class MeteredStream:
    __slots__ = ("_charge", "_chunks", "_inner_forward", "_output", "_parser", "_usage")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        charge: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        output: bool = True,
    ) -> None:
        self._chunks = chunks
        self._charge = charge
        self._output = output
        self._parser: SseParser | None = SseParser()
        self._usage: dict[str, Any] = {}
        self._inner_forward: Callable[[Write], Awaitable[None]] | None = getattr(
            chunks, "forward", None
        )

    @property
    def forward(self) -> Callable[[Write], Awaitable[None]] | None:
        """`_forward` where `chunks` forwards, else None (a caller checks for it). A
        property, not an attribute: a bound method kept on the instance is a reference
        cycle that holds the whole stream until a collection finds it."""
        return self._forward if self._inner_forward is not None else None

    def __aiter__(self) -> MeteredStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            usage, self._usage = self._usage, {}
            if usage:
                await self._charge(usage)
            raise
        if self._parser is not None:
            self._read(self._parser, chunk)
        return chunk

    async def _forward(self, write: Write) -> None:
        """As `Subscription.forward`."""
        forward = self._inner_forward
        assert forward is not None
        if self._parser is None:
            await forward(write)
            return

        def reading(chunk: bytes) -> bool:
            parser = self._parser
            if parser is None:  # done reading: refused, so the next forward is `write`'s own
                return False
            if not write(chunk):
                return False
            self._read(parser, chunk)
            return True

        await forward(reading)

    def _read(self, parser: SseParser, chunk: bytes) -> None:
        for name, data in parser.feed(chunk):
            if name == "message_start":
                message = json_object_or_none(data) or {}
                start = (message.get("message") or {}).get("usage")
                self._usage = dict(start) if isinstance(start, dict) else {}
                if not self._output:
                    self._parser = None
            elif name == "message_delta":
                delta = (json_object_or_none(data) or {}).get("usage") or {}
                if isinstance(delta.get("output_tokens"), int):
                    self._usage["output_tokens"] = delta["output_tokens"]
