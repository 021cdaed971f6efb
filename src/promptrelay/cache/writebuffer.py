"""The Redis tier's write-behind buffer: pure bookkeeping, no I/O.

    buffer.put(key, PendingWrite(entry, ttl_ms, size))   # False: full, write dropped
    batch = buffer.take(max_items=128, max_bytes=1 << 20) # the writer task sends it...
    buffer.done()                                         # ...and reports it finished

Rules:
- One slot per key: a newer write replaces the buffered one (and moves to the back),
  so a burst of writes to one key costs one Redis command.
- Bounded in writes and in bytes; when full, the new write is dropped (and a buffered
  older write of the same key with it: it is stale either way).
- ``take`` hands out the oldest writes; they stay visible to ``lookup`` as "in flight"
  until ``done``, so a read in between still sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from promptrelay.cache.base import CacheEntry

__all__ = ["PendingWrite", "WriteBuffer"]


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """An entry to SET with a TTL in milliseconds, or (``entry=None``) a key to DEL."""

    entry: CacheEntry | None
    ttl_ms: int
    size: int


class WriteBuffer:
    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._pending: dict[str, PendingWrite] = {}
        self._bytes = 0
        self.inflight: dict[str, PendingWrite] = {}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def idle(self) -> bool:
        """Nothing buffered and nothing in flight."""
        return not self._pending and not self.inflight

    def __contains__(self, key: str) -> bool:
        return key in self._pending

    def lookup(self, key: str) -> PendingWrite | None:
        """The newest write of ``key`` not yet confirmed written, if any."""
        return self._pending.get(key) or self.inflight.get(key)

    def put(self, key: str, write: PendingWrite) -> bool:
        self.discard(key)
        if len(self._pending) >= self.max_items or self._bytes + write.size > self.max_bytes:
            return False
        self._pending[key] = write
        self._bytes += write.size
        return True

    def discard(self, key: str) -> bool:
        """Forget the buffered write of ``key``; True when it was a SET."""
        write = self._pending.pop(key, None)
        if write is None:
            return False
        self._bytes -= write.size
        return write.entry is not None

    def discard_matching(self, matches: Callable[[str], bool]) -> set[str]:
        """Forget buffered writes of matching keys; return those that were SETs."""
        return {key for key in list(self._pending) if matches(key) and self.discard(key)}

    def clear(self) -> int:
        """Forget every buffered write; return how many there were."""
        count = len(self._pending)
        self._pending.clear()
        self._bytes = 0
        return count

    def take(self, *, max_items: int, max_bytes: int) -> dict[str, PendingWrite]:
        """Move the oldest writes (at least one, if any) in flight and return them."""
        batch: dict[str, PendingWrite] = {}
        size = 0
        for key in list(self._pending):
            if len(batch) >= max_items or (batch and size >= max_bytes):
                break
            write = self._pending.pop(key)
            self._bytes -= write.size
            batch[key] = write
            size += write.size
        self.inflight = batch
        return batch

    def done(self) -> None:
        """The batch in flight has been written (or given up on)."""
        self.inflight = {}
