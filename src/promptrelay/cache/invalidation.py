"""Cross-process invalidation: a pattern cleared in one process is cleared in all.

The process that clears publishes ``{"o": origin, "p": pattern}`` on a channel; every
process runs an ``InvalidationListener`` that hands patterns from *other* origins to
its handler (the tiered cache clears its memory tier with it).

Pub/sub is fire-and-forget: a process that is not subscribed when a message goes out
never sees it. So every clear is also recorded in Redis before it is published: a
generation counter and a bounded log of ``generation pattern`` lines, two keys under one
hash tag (one slot on a cluster, written by one Lua script). Each message carries its
generation. Whenever the listener (re)subscribes it reads the counter and the log once
and hands every pattern cleared since the generation it last saw to the handler; when
the log no longer reaches back that far, or Redis lost the counter (restarted empty),
it hands over ``*``. Nothing of it is read per cache hit. The listener also calls
``on_gap()`` whenever it subscribes again after having lost its subscription.
Other components share the channel for their own change notices (the circuit breaker:
``resilience/redis_state.py``): a message with a ``"k"`` (kind) field is no clear and
goes to ``Notices``, which hands it to every registered component; after every
(re)subscription each re-reads its state once, in the background and retried until it
succeeds (a failed re-read never costs the subscription), so a lost notice is
recovered too. The listener uses its own connection, waits for the Redis tier to be up
before it (re)subscribes, and reports connection failures to the tier (it is often the first to
notice Redis went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import orjson
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from promptrelay.resilience.backoff import Backoff

__all__ = [
    "GENERATION_KEY",
    "INVALIDATION_CHANNEL",
    "LOG_KEY",
    "LOG_LENGTH",
    "RECORD_SCRIPT",
    "InvalidationListener",
    "Notices",
    "decode_message",
    "encode_message",
    "missed_patterns",
]

_log = logging.getLogger(__name__)

INVALIDATION_CHANNEL = "promptrelay:invalidate"
GENERATION_KEY = "{promptrelay:invalidate}:generation"
LOG_KEY = "{promptrelay:invalidate}:log"
LOG_LENGTH = 1000  # clears remembered; an instance that missed more drops its memory tier

# KEYS: generation, log; ARGV: pattern, log length. Returns the clear's generation.
RECORD_SCRIPT = """
local generation = redis.call('INCR', KEYS[1])
redis.call('LPUSH', KEYS[2], generation .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return generation
"""


def missed_patterns(seen: int | None, current: int | None, log: list[bytes]) -> list[str]:
    """The patterns to clear on (re)subscribing, given the generation last seen.

    ``seen`` None: the first subscription (nothing held yet); ``current`` None: Redis
    has no counter. ``log`` is the newest-first ``generation pattern`` list.
    """
    if seen is None or current == seen or (current is None and seen == 0):
        return []
    if current is None or current < seen:
        return ["*"]  # Redis lost what it knew: anything may have been cleared meanwhile
    patterns: dict[int, str] = {}
    for line in log:
        number, _, pattern = line.decode("utf-8", "replace").partition(" ")
        if number.isdigit() and seen < int(number) <= current:
            patterns[int(number)] = pattern
    if len(patterns) < current - seen:
        return ["*"]  # the log no longer reaches back to what we saw
    return [patterns[number] for number in sorted(patterns)]


def encode_message(origin: str, pattern: str, generation: int | None = None) -> bytes:
    message: dict[str, object] = {"o": origin, "p": pattern}
    if generation is not None:
        message["g"] = generation
    return orjson.dumps(message)


def decode_message(data: bytes) -> tuple[str, str, int | None] | None:
    """``(origin, pattern, generation)``, or None for anything that is not our message."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    origin, pattern = message.get("o"), message.get("p")
    if not isinstance(origin, str) or not isinstance(pattern, str):
        return None
    generation = message.get("g")
    return origin, pattern, generation if isinstance(generation, int) else None


NoticeHandler = Callable[[dict[str, object]], object]


class Notices:
    """The channel's change notices of other components (messages with a ``"k"`` field).

    ``add(on_notice, resync)``: ``on_notice(message)`` for every notice on the channel
    (the component filters its own kind and origin); ``await resync()`` after each
    (re)subscription, to re-read the state whose notices may have been missed; one that
    raises (RedisUnavailable, a redis-py error) is called again after a back-off.
    """

    def __init__(self) -> None:
        self._components: list[tuple[NoticeHandler, Callable[[], Awaitable[object]]]] = []

    def __bool__(self) -> bool:
        return bool(self._components)

    def add(self, on_notice: NoticeHandler, resync: Callable[[], Awaitable[object]]) -> None:
        self._components.append((on_notice, resync))

    def deliver(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("k"), str):
            return
        for on_notice, _ in self._components:
            _call(partial(on_notice, message))

    async def resync(self) -> bool:
        """Every component's resync; False if one failed (the caller tries them again)."""
        done = True
        for _, resync in self._components:
            try:
                await resync()
            except Exception as error:  # RedisUnavailable, a redis-py error: retried
                _log.debug("re-reading shared state after subscribing failed: %r", error)
                done = False
        return done


class InvalidationListener:
    """Subscribe to ``channel`` and call ``handler(pattern)`` for other origins' messages.

    Run ``run()`` as a task; cancel it (or set ``stopped``) to end it. ``handler`` and
    ``on_gap`` may be set after construction, before ``run()``.
    """

    def __init__(
        self,
        open_pubsub: Callable[[], Awaitable[PubSub]],
        *,
        channel: str,
        origin: str,
        handler: Callable[[str], object] | None = None,
        on_gap: Callable[[], object] | None = None,
        on_failure: Callable[[BaseException], None],
        wait_until_up: Callable[[], Awaitable[object]],
        backoff: Backoff,
        subscribe_timeout: float,
        read_generation: Callable[[], Awaitable[tuple[int | None, list[bytes]]]] | None = None,
        notices: Notices | None = None,
    ) -> None:
        self._open_pubsub = open_pubsub
        self._channel = channel
        self._origin = origin
        self.handler = handler
        self.on_gap = on_gap
        self._on_failure = on_failure
        self._wait_until_up = wait_until_up
        self._backoff = backoff
        self._subscribe_timeout = subscribe_timeout
        self._read_generation = read_generation
        self._notices = notices if notices is not None else Notices()
        self.seen: int | None = None  # the newest generation this process has applied
        self.subscribed = asyncio.Event()
        self.received = 0
        self.stopped = False
        self._resync: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            await self._subscriptions()
        finally:
            if self._resync is not None:
                self._resync.cancel()

    async def _subscriptions(self) -> None:
        attempt = 0
        ever_subscribed = False
        while not self.stopped:
            await self._wait_until_up()
            pubsub: PubSub | None = None
            try:
                async with asyncio.timeout(self._subscribe_timeout):
                    pubsub = await self._open_pubsub()
                    await pubsub.subscribe(self._channel)
                await self._listen(pubsub, gap=ever_subscribed)
            except (RedisError, OSError) as error:  # OSError covers TimeoutError
                self._on_failure(error)
            except Exception:  # e.g. a cluster client mid-failover; the loop must go on
                _log.exception("invalidation subscription failed; retrying")
            finally:
                if self.subscribed.is_set():
                    ever_subscribed, attempt = True, 0
                self.subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped
            await asyncio.sleep(self._backoff.compute(attempt))
            attempt += 1

    async def _listen(self, pubsub: PubSub, *, gap: bool) -> None:
        while not self.stopped:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                await self._catch_up()
                self._start_resync()
                self.subscribed.set()
                if gap and self.on_gap is not None:
                    _call(self.on_gap)
                gap = False
            elif message["type"] == "message":
                self._received(message["data"])

    def _start_resync(self) -> None:
        """Let the notices' components re-read their state (again) in the background."""
        if self._resync is not None:
            self._resync.cancel()
        if self._notices:
            self._resync = asyncio.ensure_future(self._resync_until_done())

    async def _resync_until_done(self) -> None:
        attempt = 0
        while not self.stopped and not await self._notices.resync():
            await asyncio.sleep(self._backoff.compute(attempt))
            attempt += 1

    async def _catch_up(self) -> None:
        """Apply what was cleared while this process was not subscribed (see above).

        Runs after the subscription is confirmed, so no clear falls between the two."""
        if self._read_generation is None:
            return
        async with asyncio.timeout(self._subscribe_timeout):
            current, log = await self._read_generation()
        for pattern in missed_patterns(self.seen, current, log):
            _log.warning("invalidation %r was missed while unsubscribed; applying it", pattern)
            self._apply(pattern)
        self.saw(current or 0)

    def _apply(self, pattern: str) -> None:
        if self.handler is not None:
            _call(partial(self.handler, pattern))

    def saw(self, generation: int) -> None:
        """Record a generation as applied (this process's own clears included)."""
        self.seen = generation if self.seen is None else max(self.seen, generation)

    def _received(self, data: bytes) -> None:
        decoded = decode_message(data)
        if decoded is None:
            self._notices.deliver(data)
            return
        origin, pattern, generation = decoded
        if generation is not None:
            self.saw(generation)
        if origin == self._origin:
            return
        self.received += 1
        self._apply(pattern)


def _call(listener: Callable[[], object]) -> None:
    try:
        listener()
    except Exception:  # a listener's bug must not end the subscription
        _log.exception("invalidation listener failed")
