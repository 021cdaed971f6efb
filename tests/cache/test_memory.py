"""MemoryTier: the byte bound, LRU order, expiry, sweeping, trimming, admission."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptrelay.cache import CacheEntry, MemoryTier
from promptrelay.cache.memory import _entry, entry_footprint
from tests.cache.conftest import FakeClock, entry, eventually


def accounted_bytes(tier: MemoryTier) -> int:
    """The footprint of what is stored, recomputed from scratch."""
    return sum(entry_footprint(key, _entry(slot)) for key, slot in tier._data.items())


def test_never_exceeds_max_bytes_when_filled_three_times_over(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=64 << 10, clock=clock)
    rng = random.Random(7)
    inserted = 0
    i = 0
    while inserted < 3 * tier.max_bytes:
        key = f"pr:t:claude_response:{i}"
        value = rng.randbytes(rng.randint(0, 3000))
        tier.set_now(key, entry(value), 60)
        inserted += entry_footprint(key, entry(value))
        assert tier.bytes <= tier.max_bytes
        assert tier.bytes == accounted_bytes(tier)
        i += 1
    stats = tier.stats()
    assert stats["evictions"] > 0
    assert stats["entries"] == len(tier) < i
    assert stats["bytes"] > tier.max_bytes // 2  # it stays full, not empty


def test_lru_order_evicts_least_recently_used(clock: FakeClock) -> None:
    one = entry_footprint("pr:t:x:a", entry(b"x" * 100))
    tier = MemoryTier(max_bytes=3 * one, clock=clock)
    for name in "abc":
        assert tier.set_now(f"pr:t:x:{name}", entry(b"x" * 100), 60)
    assert tier.get_now("pr:t:x:a") is not None  # a is now the most recently used
    tier.set_now("pr:t:x:d", entry(b"x" * 100), 60)
    assert tier.get_now("pr:t:x:b") is None
    assert [tier.get_now(f"pr:t:x:{name}") is not None for name in "acd"] == [True] * 3
    assert tier.stats()["evictions"] == 1


def test_overwrite_refreshes_position_and_accounting(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    tier.set_now("pr:t:x:k", entry(b"x" * 10_000), 60)
    tier.set_now("pr:t:x:k", entry(b"y" * 10), 60)
    assert len(tier) == 1
    assert tier.bytes == accounted_bytes(tier)


def test_expired_entries_are_removed_on_access(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    tier.set_now("pr:t:x:k", entry(), 5)
    clock.advance(4.999)
    assert tier.get_now("pr:t:x:k") is not None
    clock.advance(0.001)
    assert tier.get_now("pr:t:x:k") is None
    assert len(tier) == 0 and tier.bytes == 0
    assert tier.stats()["expired"] == 1


def test_sweep_removes_only_expired_entries(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    for i in range(10):
        tier.set_now(f"pr:t:x:short{i}", entry(), 1)
    tier.set_now("pr:t:x:long", entry(), 100)
    clock.advance(2)
    assert tier.sweep() == 10
    assert len(tier) == 1
    assert tier.bytes == accounted_bytes(tier)
    assert tier.sweep() == 0


async def test_background_sweeper(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    tier.set_now("pr:t:x:k", entry(), 1)
    tier.start(sweep_interval=0.01)
    clock.advance(2)
    await eventually(lambda: len(tier) == 0, timeout=2)
    await tier.close()
    await tier.close()  # idempotent


def test_trim_sheds_the_oldest_fraction_of_bytes(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    for i in range(100):
        tier.set_now(f"pr:t:x:{i}", entry(b"x" * 1000), 60)
    tier.get_now("pr:t:x:0")  # most recently used now
    before = tier.bytes
    freed = tier.trim(0.5)
    assert freed >= before // 2
    assert tier.bytes == before - freed <= before // 2
    assert tier.get_now("pr:t:x:0") is not None
    assert tier.get_now("pr:t:x:1") is None  # the oldest went first
    assert tier.get_now("pr:t:x:99") is not None
    assert tier.stats()["evictions"] == 100 - len(tier)
    remaining = tier.bytes
    assert tier.trim(1.0) == remaining
    assert tier.bytes == 0 and len(tier) == 0
    with pytest.raises(ValueError):
        tier.trim(1.5)


def test_oversize_entries_are_rejected(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_entry_bytes=10_000, clock=clock)
    tier.set_now("pr:t:x:k", entry(b"small"), 60)
    assert tier.set_now("pr:t:x:k", entry(b"x" * 10_001), 60) is False
    # The old value is gone too: a newer answer exists, the stale one must not be served.
    assert tier.get_now("pr:t:x:k") is None
    assert tier.stats()["rejected"] == 1
    assert tier.bytes == 0
    # Larger than the whole tier: same.
    small = MemoryTier(max_bytes=1000, clock=clock)
    assert small.set_now("pr:t:x:k", entry(b"x" * 2000), 60) is False


def test_nonpositive_ttl_is_not_stored(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    assert tier.set_now("pr:t:x:k", entry(), 0) is False
    assert len(tier) == 0


def test_set_stamps_wall_clock_expiry(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock, wall_clock=lambda: 5000.0)
    tier.set_now("pr:t:x:k", entry(stored_at=4000.0), 30)
    got = tier.get_now("pr:t:x:k")
    assert got is not None and got.expires_at == 5030.0 and got.stored_at == 4000.0


def test_footprint_estimate_is_honest() -> None:
    """The estimate is close to what tracemalloc sees the tier keep alive."""
    count = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tier = MemoryTier(max_bytes=1 << 30)
        for i in range(count):
            value = bytes(random.getrandbits(8) for _ in range(200))
            tier.set_now(f"pr:tenant:claude_response:{i:064x}", entry(value), 60)
        actual = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = tier.bytes
    print(f"estimated {estimated} B, traced {actual} B")
    assert 0.8 * actual <= estimated <= 1.5 * actual, (estimated, actual)


async def test_protocol_methods(memory: MemoryTier) -> None:
    await memory.set("pr:t:x:k", entry(b"v"), 60)
    got = await memory.get("pr:t:x:k")
    assert got is not None and got.value == b"v"
    assert await memory.delete("pr:t:x:k") is True
    assert await memory.clear() == 0
    await memory.close()


_ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "delete", "advance", "clear", "trim"]),
        st.integers(0, 15),  # key
        st.integers(0, 3000),  # value size
        st.floats(0.5, 20),  # ttl or seconds to advance
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_random_operations_keep_the_invariants(ops: list[tuple[str, int, int, float]]) -> None:
    clock = FakeClock()
    tier = MemoryTier(max_bytes=12_000, max_entry_bytes=4_000, clock=clock)
    latest: dict[str, tuple[bytes, float]] = {}  # key -> (value, expiry) of the last set
    for op, k, size, amount in ops:
        key = f"pr:t:x:{k}"
        if op == "set":
            value = bytes([k]) * size
            if tier.set_now(key, CacheEntry(value, 0.0, "x"), amount):
                latest[key] = (value, clock() + amount)
            else:
                latest.pop(key, None)
        elif op == "get":
            got = tier.get_now(key)
            if got is not None:
                # Never an expired value, never anything but the last value set.
                value, expiry = latest[key]
                assert got.value == value and clock() < expiry
        elif op == "delete":
            tier.delete_now(key)
            latest.pop(key, None)
        elif op == "advance":
            clock.advance(amount)
        elif op == "clear":
            tier.clear_keys(f"pr:t:x:{k % 10}*")
        else:
            tier.trim(min(amount / 20, 1.0))
        assert tier.bytes <= tier.max_bytes
        assert tier.bytes == accounted_bytes(tier)


def test_stored_entries_add_nothing_for_the_collector_to_visit(clock: FakeClock) -> None:
    tier = MemoryTier(max_bytes=1 << 20, clock=clock)
    tier.set_now("k", CacheEntry(b"v", 1.0, "claude_response", meta={"tokens": 3}), 60)
    # An exact tuple of untracked items is untracked when it survives a collection: the
    # meta pairs first, then the meta tuple, then the slot.
    for _ in range(3):
        gc.collect()
    assert not gc.is_tracked(tier._data["k"])
    assert tier.get_now("k") == CacheEntry(
        b"v", 1.0, "claude_response", expires_at=tier._data["k"][3], meta={"tokens": 3}
    )
