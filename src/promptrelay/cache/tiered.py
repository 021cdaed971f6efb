"""The two-tier cache the request path talks to: memory first, then Redis.

    cache = TieredCache.from_settings(settings, on_state=telemetry.redis_state)
    await cache.start()
    entry = await cache.get(key, max_age=60)          # None: miss
    await cache.set(key, CacheEntry(body, time.time(), "claude_response"))
    await cache.set(key, entry, shared=False)          # offline answers: this process only
    await cache.clear("pr:tenantA:*")                  # every process, through pub/sub
    await cache.close()

- ``get`` reads memory, then Redis; a Redis hit is copied into memory for the entry's
  remaining lifetime (``expires_at`` - now), never a fresh full TTL.
- ``max_age`` (HTTP ``Cache-Control: max-age``): an entry older than ``max_age`` seconds
  (now - ``stored_at``) reads as a miss but stays stored; a fresher copy in Redis (written
  by another process) is still found.
- ``set`` writes memory now and Redis behind (see ``cache/redis.py``); the TTL defaults
  to the content type's policy (``cache/ttl.py``).
- ``clear`` and ``delete`` act on both tiers here and publish the pattern (the escaped
  key) so every other process drops it from its memory tier too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promptrelay.cache.base import CacheEntry, content_type_of
from promptrelay.cache.glob import glob_escape
from promptrelay.cache.keys import RawMemo
from promptrelay.cache.memory import MemoryTier
from promptrelay.cache.redis import RedisTier
from promptrelay.cache.ttl import TtlPolicy

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = ["TieredCache"]

_log = logging.getLogger(__name__)
_MAX_TRACKED_TYPES = 32  # beyond this, per-type counts go to "other" (keys are input)


class TieredCache:
    """Memory tier in front of an optional Redis tier. Owns both: ``close`` closes them."""

    def __init__(
        self,
        memory: MemoryTier,
        redis: RedisTier | None = None,
        *,
        ttl_policy: TtlPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        clear_memory_on_gap: bool = False,
        sweep_interval: float = 30.0,
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.ttl_policy = ttl_policy or TtlPolicy()
        self._wall_clock = wall_clock
        self._clear_memory_on_gap = clear_memory_on_gap
        self._sweep_interval = sweep_interval
        self._memory_hits = 0
        self._redis_hits = 0
        self._misses = 0
        self._stale = 0
        self._by_type: dict[str, list[int]] = {}
        self._counts_by_key: RawMemo[list[int]] = RawMemo()  # a key's row of _by_type

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        on_state: Callable[[str], object] | None = None,
        **kwargs: Any,
    ) -> TieredCache:
        """Memory tier always; Redis tier when ``REDIS_ENABLED``."""
        redis = (
            RedisTier.from_settings(settings, on_state=on_state) if settings.redis_enabled else None
        )
        return cls(
            MemoryTier.from_settings(settings),
            redis,
            ttl_policy=TtlPolicy.from_settings(settings),
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"TieredCache(memory={self.memory!r}, redis={self.redis!r})"

    async def start(self) -> None:
        """Start the memory sweeper, connect Redis and subscribe to invalidations."""
        self.memory.start(self._sweep_interval)
        if self.redis is not None:
            self.redis.listen_invalidations(self._invalidated, on_gap=self._gap)
            await self.redis.start()

    async def close(self) -> None:
        await self.memory.close()
        if self.redis is not None:
            await self.redis.close()

    async def __aenter__(self) -> TieredCache:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def get(self, key: str, *, max_age: float | None = None) -> CacheEntry | None:
        counts = self._counts_for(key)
        entry = self.memory.get_now(key)
        if entry is not None:
            if max_age is None or self._wall_clock() - entry.stored_at <= max_age:
                self._memory_hits += 1
                counts[0] += 1
                return entry
            self._stale += 1
        if self.redis is not None and self.redis.is_up:
            found = await self.redis.get(key)
            if found is not None:
                now = self._wall_clock()
                remaining = (found.expires_at or now) - now
                if remaining > 0:
                    self.memory.set_now(key, found, remaining)
                if max_age is None or now - found.stored_at <= max_age:
                    self._redis_hits += 1
                    counts[0] += 1
                    return found
                self._stale += 1
        self._misses += 1
        counts[1] += 1
        return None

    async def set(
        self, key: str, entry: CacheEntry, ttl: float | None = None, *, shared: bool = True
    ) -> None:
        """Store in memory and (when ``shared``) in Redis; ``ttl`` defaults to the policy."""
        if ttl is None:
            ttl = self.ttl_policy.ttl_for(entry.content_type)
        self.memory.set_now(key, entry, ttl)
        if shared and self.redis is not None:
            self.redis.set_nowait(key, entry, ttl)

    async def delete(self, key: str) -> bool:
        """Delete in both tiers and in every process's memory tier."""
        removed = self.memory.delete_now(key)
        if self.redis is not None:
            removed = await self.redis.delete(key) or removed
            await self.redis.publish_invalidation(glob_escape(key))
        return removed

    async def clear(self, pattern: str = "*") -> int:
        """Clear matching keys in both tiers and in every process; return keys removed."""
        removed = self.memory.clear_keys(pattern)
        if self.redis is not None:
            removed |= await self.redis.clear_keys(pattern)
            await self.redis.publish_invalidation(pattern)
        return len(removed)

    async def flush(self) -> None:
        """Wait until buffered Redis writes have been attempted (tests, shutdown)."""
        if self.redis is not None:
            await self.redis.flush()

    def stats(self) -> dict[str, Any]:
        hits = self._memory_hits + self._redis_hits
        lookups = hits + self._misses
        return {
            "hits": hits,
            "misses": self._misses,
            "hit_ratio": hits / lookups if lookups else 0.0,
            "memory_hits": self._memory_hits,
            "redis_hits": self._redis_hits,
            "stale": self._stale,
            "entries": self.memory.stats()["entries"],
            "bytes": self.memory.bytes,
            "by_content_type": {
                name: {"hits": hits_, "misses": misses}
                for name, (hits_, misses) in self._by_type.items()
            },
            "memory": self.memory.stats(),
            "redis": None if self.redis is None else self.redis.stats(),
        }

    def _counts_for(self, key: str) -> list[int]:
        known = self._counts_by_key.get((key,))
        if known is None:
            known = self._type_counts(key)
            self._counts_by_key.put((key,), known)
        return known

    def _type_counts(self, key: str) -> list[int]:
        name = content_type_of(key)
        counts = self._by_type.get(name)
        if counts is None:
            if len(self._by_type) >= _MAX_TRACKED_TYPES:
                name = "other"
            counts = self._by_type.setdefault(name, [0, 0])
        return counts

    def _invalidated(self, pattern: str) -> None:
        removed = self.memory.clear_keys(pattern)
        _log.debug("invalidation %r from another process removed %d keys", pattern, len(removed))

    def _gap(self) -> None:
        if self._clear_memory_on_gap:
            self.memory.clear_keys("*")
