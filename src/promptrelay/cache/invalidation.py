"""Cross-process invalidation: a pattern cleared in one process is cleared in all.

The process that clears publishes ``{"o": origin, "p": pattern}`` on a channel; every
process runs an ``InvalidationListener`` that hands patterns from *other* origins to
its handler (the tiered cache clears its memory tier with it).

Pub/sub is fire-and-forget: a process that is not subscribed when a message goes out
never sees it. The listener therefore calls ``on_gap()`` whenever it subscribes again
after having lost its subscription, so the owner can decide what a possible miss costs.
The listener uses its own connection, waits for the Redis tier to be up before it
(re)subscribes, and reports connection failures to the tier (it is often the first to
notice Redis went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from promptrelay.resilience.backoff import Backoff

__all__ = ["INVALIDATION_CHANNEL", "InvalidationListener", "decode_message", "encode_message"]

_log = logging.getLogger(__name__)

INVALIDATION_CHANNEL = "promptrelay:invalidate"


def encode_message(origin: str, pattern: str) -> bytes:
    return orjson.dumps({"o": origin, "p": pattern})


def decode_message(data: bytes) -> tuple[str, str] | None:
    """``(origin, pattern)``, or None for anything that is not our message."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    origin, pattern = message.get("o"), message.get("p")
    if not isinstance(origin, str) or not isinstance(pattern, str):
        return None
    return origin, pattern


class InvalidationListener:
    """Subscribe to ``channel`` and call ``handler(pattern)`` for other origins' messages.

    Run ``run()`` as a task; cancel it (or set ``stopped``) to end it.
    """

    def __init__(
        self,
        client: Redis,
        *,
        channel: str,
        origin: str,
        handler: Callable[[str], object],
        on_gap: Callable[[], object] | None,
        on_failure: Callable[[BaseException], None],
        wait_until_up: Callable[[], Awaitable[object]],
        backoff: Backoff,
        subscribe_timeout: float,
    ) -> None:
        self._client = client
        self._channel = channel
        self._origin = origin
        self._handler = handler
        self._on_gap = on_gap
        self._on_failure = on_failure
        self._wait_until_up = wait_until_up
        self._backoff = backoff
        self._subscribe_timeout = subscribe_timeout
        self.subscribed = asyncio.Event()
        self.received = 0
        self.stopped = False

    async def run(self) -> None:
        attempt = 0
        ever_subscribed = False
        while not self.stopped:
            await self._wait_until_up()
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._subscribe_timeout):
                    await pubsub.subscribe(self._channel)
                await self._listen(pubsub, gap=ever_subscribed)
            except (RedisError, OSError) as error:  # OSError covers TimeoutError
                self._on_failure(error)
            finally:
                if self.subscribed.is_set():
                    ever_subscribed, attempt = True, 0
                self.subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(self._backoff.compute(attempt))
            attempt += 1

    async def _listen(self, pubsub: PubSub, *, gap: bool) -> None:
        while not self.stopped:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                self.subscribed.set()
                if gap and self._on_gap is not None:
                    _call(self._on_gap)
                gap = False
            elif message["type"] == "message":
                self._received(message["data"])

    def _received(self, data: bytes) -> None:
        decoded = decode_message(data)
        if decoded is None or decoded[0] == self._origin:
            return
        self.received += 1
        pattern = decoded[1]
        _call(lambda: self._handler(pattern))


def _call(listener: Callable[[], object]) -> None:
    try:
        listener()
    except Exception:  # a listener's bug must not end the subscription
        _log.exception("invalidation listener failed")
