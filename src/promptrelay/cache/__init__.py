"""The two-tier response cache: a byte-bounded memory LRU in front of Redis.

Modules:
    base.py          CacheEntry, the CacheTier protocol, ContentType
    ttl.py           TtlPolicy: seconds to keep each content type
    memory.py        MemoryTier: in-process LRU bounded in bytes, TTLs, sweeper
    redis.py         RedisTier: shared tier, bounded calls, up/down health, write-behind
    gate.py          RedisGate: every Redis call bounded, skipped while down, fed to health
    health.py        the pure up/down state machine the gate follows
    writebuffer.py   the pure write-behind buffer RedisTier drains
    invalidation.py  cross-process invalidation over pub/sub
    codec.py         the byte layout of a value stored in Redis
    glob.py          Redis-style glob matching, so every tier clears the same keys
    tiered.py        TieredCache: what the request path uses

Start/stop: ``await cache.start()`` / ``await cache.close()`` (or ``async with cache``)
run and end the memory sweeper, the Redis writer, the Redis probe and the invalidation
listener.
"""

from promptrelay.cache.base import CacheEntry, CacheTier, ContentType, content_type_of
from promptrelay.cache.health import DOWN, UP, Backoff
from promptrelay.cache.invalidation import INVALIDATION_CHANNEL
from promptrelay.cache.memory import MemoryTier
from promptrelay.cache.redis import RedisTier
from promptrelay.cache.tiered import TieredCache
from promptrelay.cache.ttl import DEFAULT_TTLS, TtlPolicy

__all__ = [
    "DEFAULT_TTLS",
    "DOWN",
    "INVALIDATION_CHANNEL",
    "UP",
    "Backoff",
    "CacheEntry",
    "CacheTier",
    "ContentType",
    "MemoryTier",
    "RedisTier",
    "TieredCache",
    "TtlPolicy",
    "content_type_of",
]
