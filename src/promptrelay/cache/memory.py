"""The in-process tier: an LRU bounded in bytes, with per-entry TTLs.

    memory = MemoryTier(max_bytes=64 << 20, max_entry_bytes=4 << 20)
    memory.set_now(key, entry, ttl=1800)
    entry = memory.get_now(key)          # the hot path: no await needed

Invariants:
- ``bytes`` is the sum of the footprints of the stored entries and never exceeds
  ``max_bytes``: ``set`` evicts least-recently-used entries until the new one fits. A
  value longer than ``max_entry_bytes``, or an entry whose footprint exceeds
  ``max_bytes``, is not stored at all (and any older value of its key is dropped).
- A footprint is an honest estimate of what an entry keeps alive: the key and value
  objects, the entry record and the per-slot bookkeeping (``ENTRY_OVERHEAD``).
- Expiry uses the injected monotonic ``clock``; an expired entry is never returned. It is
  removed when touched, by ``sweep()`` (run periodically by ``start()``) or by eviction.
- ``get_now`` is a dictionary lookup, an expiry check and ``move_to_end``; nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from promptrelay.cache._tasks import stop_tasks
from promptrelay.cache.base import CacheEntry, MetaValue
from promptrelay.cache.glob import glob_matcher

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = ["ENTRY_OVERHEAD", "MemoryTier", "entry_footprint"]

_log = logging.getLogger(__name__)
_KeySet = set[str]  # spelled once here: inside the classes "set" is a method

# Bytes kept alive per entry besides the key and value objects: the CacheEntry record
# (~80), its stored_at/expires_at floats (2 x 24), the slot tuple (~64), the expiry float
# (24), the OrderedDict hash slot and linked-list node (~100 amortised). Checked against
# tracemalloc in tests/cache/test_memory.py.
ENTRY_OVERHEAD = 320


# A slot is a plain tuple of immutable scalars: the entry's fields, its expiry on the
# tier's monotonic clock and its footprint. Not a NamedTuple or a record on purpose: the
# collector untracks exact tuples (and dicts) that hold only scalars, so a full cache adds
# nothing to what each full collection has to visit (with records it added two objects per
# entry, and collections over a full cache stalled the loop for ~10 ms).
# (A dict would keep its tuple tracked forever, so `meta` is kept as a tuple of pairs.)
_Meta = tuple[tuple[str, MetaValue], ...]
_Slot = tuple[bytes, float, str, float, _Meta | None, float, int]
_EXPIRES: Final = 5
_SIZE: Final = 6


def _slot(entry: CacheEntry, expires_at: float, expires: float, size: int) -> _Slot:
    meta = tuple(entry.meta.items()) if entry.meta else None
    return (entry.value, entry.stored_at, entry.content_type, expires_at, meta, expires, size)


def _entry(slot: _Slot) -> CacheEntry:
    meta = slot[4]
    return CacheEntry(slot[0], slot[1], slot[2], slot[3], dict(meta) if meta else None)


def entry_footprint(key: str, entry: CacheEntry) -> int:
    """Estimated bytes an entry costs while stored under ``key``."""
    size = sys.getsizeof(key) + sys.getsizeof(entry.value) + ENTRY_OVERHEAD
    meta = entry.meta
    if meta:  # the names and the values summed in C, not by a generator per entry
        size += sys.getsizeof(meta) + sum(map(sys.getsizeof, meta))
        size += sum(map(sys.getsizeof, meta.values()))
    return size


class MemoryTier:
    """Byte-bounded LRU with TTLs. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        *,
        max_bytes: int,
        max_entry_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes or max_bytes, max_bytes)
        self._clock = clock
        self._wall_clock = wall_clock
        self._data: OrderedDict[str, _Slot] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._evictions = 0
        self._expired = 0
        self._rejected = 0
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MemoryTier:
        """Build from ``Settings`` (memory_cache_max_bytes, cache_max_entry_bytes)."""
        return cls(
            max_bytes=settings.memory_cache_max_bytes,
            max_entry_bytes=settings.cache_max_entry_bytes,
            **kwargs,
        )

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryTier(entries={len(self._data)}, bytes={self._bytes}/{self.max_bytes})"

    @property
    def bytes(self) -> int:
        return self._bytes

    # -- synchronous core ------------------------------------------------------------

    def get_now(self, key: str) -> CacheEntry | None:
        slot = self._data.get(key)
        if slot is None:
            self._misses += 1
            return None
        if slot[_EXPIRES] <= self._clock():
            self._drop(key, slot)
            self._expired += 1
            self._misses += 1
            return None
        self._data.move_to_end(key)
        self._hits += 1
        return _entry(slot)

    def touch(self, key: str) -> bool:
        """Whether a live entry is stored under ``key``; keeps it at the fresh end of the
        LRU without counting a lookup (for markers checked on every request)."""
        slot = self._data.get(key)
        if slot is None or slot[_EXPIRES] <= self._clock():
            return False
        self._data.move_to_end(key)
        return True

    def set_now(self, key: str, entry: CacheEntry, ttl: float) -> bool:
        """Store ``entry`` for ``ttl`` seconds; False when it is not admitted."""
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[_SIZE]
        if ttl <= 0:
            return False
        size = entry_footprint(key, entry)
        if len(entry.value) > self.max_entry_bytes or size > self.max_bytes:
            self._rejected += 1
            return False
        self._make_room(size)
        self._data[key] = _slot(entry, self._wall_clock() + ttl, self._clock() + ttl, size)
        self._bytes += size
        self._sets += 1
        return True

    def delete_now(self, key: str) -> bool:
        """Remove ``key``; True when a live (unexpired) entry was removed."""
        slot = self._data.pop(key, None)
        if slot is None:
            return False
        self._bytes -= slot[_SIZE]
        return slot[_EXPIRES] > self._clock()

    def clear_keys(self, pattern: str = "*") -> _KeySet:
        """Remove every key matching the glob; return the live keys that were removed."""
        now = self._clock()
        if pattern == "*":
            removed = {key for key, slot in self._data.items() if slot[_EXPIRES] > now}
            self._data.clear()
            self._bytes = 0
            return removed
        matches = glob_matcher(pattern)
        removed = set()
        for key in [key for key in self._data if matches(key)]:
            slot = self._data.pop(key)
            self._bytes -= slot[_SIZE]
            if slot[_EXPIRES] > now:
                removed.add(key)
        return removed

    def sweep(self) -> int:
        """Remove every expired entry; return how many were removed."""
        now = self._clock()
        expired = [key for key, slot in self._data.items() if slot[_EXPIRES] <= now]
        for key in expired:
            self._bytes -= self._data.pop(key)[_SIZE]
        self._expired += len(expired)
        return len(expired)

    def by_namespace(self) -> dict[str, dict[str, int]]:
        """Live entries and their bytes per key namespace (`pr:<namespace>:...`): one pass
        over the keys, for an admin asking, never on the request path."""
        now = self._clock()
        found: dict[str, dict[str, int]] = {}
        for key, slot in list(self._data.items()):
            if slot[_EXPIRES] <= now:
                continue
            parts = key.split(":", 2)
            name = parts[1] if len(parts) > 2 else "(other)"
            counts = found.setdefault(name, {"entries": 0, "bytes": 0})
            counts["entries"] += 1
            counts["bytes"] += slot[_SIZE]
        return dict(sorted(found.items()))

    def trim(self, fraction: float) -> int:
        """Shed at least ``fraction`` of the stored bytes, oldest first; return bytes freed."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        target = self._bytes - int(self._bytes * fraction)
        freed = 0
        while self._bytes > target and self._data:
            freed += self._evict_oldest()
        return freed

    def _make_room(self, size: int) -> None:
        while self._bytes + size > self.max_bytes and self._data:
            self._evict_oldest()

    def _evict_oldest(self) -> int:
        _key, slot = self._data.popitem(last=False)
        self._bytes -= slot[_SIZE]
        if slot[_EXPIRES] <= self._clock():
            self._expired += 1
        else:
            self._evictions += 1
        return slot[_SIZE]

    def _drop(self, key: str, slot: _Slot) -> None:
        del self._data[key]
        self._bytes -= slot[_SIZE]

    # -- the CacheTier protocol ------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        return self.get_now(key)

    async def set(self, key: str, entry: CacheEntry, ttl: float) -> None:
        self.set_now(key, entry, ttl)

    async def delete(self, key: str) -> bool:
        return self.delete_now(key)

    async def clear(self, pattern: str = "*") -> int:
        return len(self.clear_keys(pattern))

    def stats(self) -> dict[str, Any]:
        return {
            "hits": self._hits,
            "misses": self._misses,
            "sets": self._sets,
            "entries": len(self._data),
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "evictions": self._evictions,
            "expired": self._expired,
            "rejected": self._rejected,
        }

    # -- background sweeping ---------------------------------------------------------

    async def run_sweeper(self, interval: float = 30.0) -> None:
        """Sweep expired entries every ``interval`` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # a bug here must not end the sweeper
                _log.exception("memory cache sweep failed")

    def start(self, sweep_interval: float = 30.0) -> None:
        """Start the periodic sweeper on the running loop (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self.run_sweeper(sweep_interval), name="promptrelay-memory-sweeper"
            )

    async def close(self) -> None:
        """Stop the sweeper; the stored entries stay readable."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            await stop_tasks([task])
