"""Quotas and budgets of KEYS_FILE keys: counted per window, refused once reached.

Rules
-----

    windows    fixed UTC windows: the minute, the day, the calendar month
    check      before the cache lookup: a model outside `models` is a 403; a model
               without a price under a dollar cap is a 403 that says so; a window whose
               count has reached its limit is a 429 naming the limit, with retry-after
               = seconds until that window ends (over 60 s: also x-should-retry: false)
    count      the request counts at once (a cache hit too); tokens (input + output) and
               dollars when the answer is known, so one request may cross a cap and the
               next one is refused; a cache hit costs no tokens and no dollars
    dollars    Anthropic's prices: input, output, cache writes (1.25x input for 5 min,
               2x for 1 h), cache reads (0.1x input)

Counters live behind `Counters` (memory, or Redis with single-key commands: cluster
safe). With Redis unreachable the memory counters of this process are used.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster

from promptrelay.core.keyfile import KeyEntry
from promptrelay.core.prompt_cache import READ, WRITE_1H, WRITE_5M
from promptrelay.errors import Forbidden, RateLimited, RedisUnavailable
from promptrelay.resilience.redis_state import RedisRunner

__all__ = ["Counters", "MemoryCounters", "Quotas", "RedisCounters", "dollars", "windows"]

log = logging.getLogger("promptrelay.quotas")

PriceFn = Callable[[str], tuple[float, float] | None]
_PREFIX = "promptrelay:quota:"

# limit name -> (counter kind, window)
_LIMITS = {
    "requests_per_minute": ("requests", "minute"),
    "tokens_per_minute": ("tokens", "minute"),
    "tokens_per_day": ("tokens", "day"),
    "dollars_per_day": ("dollars", "day"),
    "dollars_per_month": ("dollars", "month"),
}


@dataclass(frozen=True, slots=True)
class Window:
    label: str  # part of the counter's key
    left: float  # seconds until it ends


def windows(now: float) -> dict[str, Window]:
    moment = datetime.fromtimestamp(now, UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return {
        "minute": Window(moment.strftime("%Y%m%dT%H%M"), 60 - now % 60),
        "day": Window(moment.strftime("%Y%m%d"), (day_start + timedelta(days=1)).timestamp() - now),
        "month": Window(moment.strftime("%Y%m"), next_month.timestamp() - now),
    }


def dollars(usage: Mapping[str, Any], price: tuple[float, float]) -> float:
    """What one answer's usage costs, with Anthropic's cache multipliers."""
    per_in, per_out = price
    fresh = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    created = _int(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    one_hour = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    five_min = max(0, created - one_hour)
    input_cost = fresh + WRITE_5M * five_min + WRITE_1H * one_hour + READ * read
    return (input_cost * per_in + _int(usage.get("output_tokens")) * per_out) / 1e6


def tokens(usage: Mapping[str, Any]) -> int:
    """Tokens a quota counts: every input token (cached or not) and the output."""
    names = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return sum(_int(usage.get(n)) for n in names) + _int(usage.get("output_tokens"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Counters(Protocol):
    async def get(self, keys: list[str]) -> list[float]: ...

    async def add(self, items: Iterable[tuple[str, float, float]]) -> None:
        """(key, amount, seconds to keep)."""


class MemoryCounters:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._values: dict[str, tuple[float, float]] = {}
        self._clock = clock

    async def get(self, keys: list[str]) -> list[float]:
        now = self._clock()
        found = [self._values.get(key) for key in keys]
        return [v[0] if v is not None and v[1] > now else 0.0 for v in found]

    async def add(self, items: Iterable[tuple[str, float, float]]) -> None:
        now = self._clock()
        for key, amount, keep in items:
            value, until = self._values.get(key, (0.0, 0.0))
            self._values[key] = ((value if until > now else 0.0) + amount, now + keep)
        if len(self._values) > 100_000:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}


class RedisCounters:
    """INCRBYFLOAT + EXPIRE per key in a non-transactional pipeline: one key a command,
    through the cache tier's gate; while it is down, this process's memory counts."""

    def __init__(self, redis: RedisRunner) -> None:
        self._redis = redis
        self._fallback = MemoryCounters()

    async def get(self, keys: list[str]) -> list[float]:
        async def read(client: Redis | RedisCluster) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

        try:
            values = await self._redis.run(read)
            return [float(v) if v is not None else 0.0 for v in values]
        except (RedisUnavailable, ValueError) as error:
            log.warning("quota counters: Redis read failed (%s)", type(error).__name__)
        return await self._fallback.get(keys)

    async def add(self, items: Iterable[tuple[str, float, float]]) -> None:
        items = list(items)

        async def write(client: Redis | RedisCluster) -> None:
            pipe = client.pipeline(transaction=False)
            for key, amount, keep in items:
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, math.ceil(keep))
            await pipe.execute()

        try:
            await self._redis.run(write)
            return
        except RedisUnavailable as error:
            log.warning("quota counters: Redis write failed (%s)", type(error).__name__)
        await self._fallback.add(items)


class Quotas:
    def __init__(
        self, counters: Counters, price: PriceFn, clock: Callable[[], float] = time.time
    ) -> None:
        self._counters = counters
        self._price = price
        self._clock = clock

    def _keys(self, entry: KeyEntry, now: float) -> dict[str, tuple[str, float]]:
        """limit name -> (counter key, seconds left in its window) for the entry's limits."""
        spans = windows(now)
        found = {}
        for name in entry.limits():
            kind, window = _LIMITS[name]
            span = spans[window]
            found[name] = (f"{_PREFIX}{entry.name}:{kind}:{span.label}", span.left)
        return found

    async def admit(self, entry: KeyEntry, model: str) -> None:
        """Raises Forbidden or RateLimited; else counts the request."""
        if entry.models is not None and model not in entry.models:
            raise Forbidden(f"key {entry.name!r} may not use model {model!r}")
        if entry.dollar_capped and self._price(model) is None:
            raise Forbidden(
                f"model {model!r} has no price, and key {entry.name!r} has a dollar cap: "
                "add its price to PROVIDERS_FILE"
            )
        now = self._clock()
        keys = self._keys(entry, now)
        if keys:
            values = await self._counters.get([key for key, _ in keys.values()])
            limits = entry.limits()
            for (name, (_, left)), used in zip(keys.items(), values, strict=True):
                if used >= limits[name]:
                    raise RateLimited(
                        f"key {entry.name!r} reached its {name} limit of {limits[name]:g}",
                        retry_after=max(1.0, left),
                    )
        if entry.requests_per_minute is not None:
            key, left = keys["requests_per_minute"]
            await self._counters.add([(key, 1.0, left + 5)])

    async def charge(self, entry: KeyEntry, model: str, usage: Mapping[str, Any]) -> None:
        """Count an upstream answer's tokens and dollars (never a cache hit's)."""
        keys = self._keys(entry, self._clock())
        price = self._price(model)
        amounts = {"tokens": float(tokens(usage))}
        amounts["dollars"] = dollars(usage, price) if price is not None else 0.0
        items = [
            (key, amounts[_LIMITS[name][0]], left + 5)
            for name, (key, left) in keys.items()
            if _LIMITS[name][0] in amounts and amounts[_LIMITS[name][0]] > 0
        ]
        if items:
            await self._counters.add(items)

    async def usage(self, entry: KeyEntry) -> dict[str, Any]:
        """What /api/keys shows: each limit and what its window has used."""
        keys = self._keys(entry, self._clock())
        values = await self._counters.get([key for key, _ in keys.values()]) if keys else []
        limits = entry.limits()
        return {
            name: {"limit": limits[name], "used": round(value, 6), "resets_in_s": round(left)}
            for (name, (_, left)), value in zip(keys.items(), values, strict=True)
        }
