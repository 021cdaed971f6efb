"""The dashboard's per-request facts: the last requests and the counts by model/template."""

from __future__ import annotations

from promptrelay.cache.base import CacheEntry
from promptrelay.cache.memory import MemoryTier
from promptrelay.core.events import EventBus, RequestFinished
from promptrelay.telemetry.stats import OTHER, RECENT, RequestStats


def _finished(i: int, model: str = "m", template: str = "") -> RequestFinished:
    return RequestFinished("/v1/messages", 200, "HIT", i / 1000, model=model, template=template)


def test_the_last_requests_newest_first_and_bounded():
    bus = EventBus()
    stats = RequestStats()
    stats.subscribe(bus)
    for i in range(RECENT + 300):  # folds in batches and once more on read
        bus.emit(_finished(i, template="t" if i % 2 else ""))
    recent = stats.last_requests()
    assert len(recent) == RECENT
    assert recent[0]["ms"] == RECENT + 299 and recent[-1]["ms"] == 300
    assert set(recent[0]) == {"route", "model", "template", "status", "cache", "ms", "stream"}
    assert stats.counts_by() == {"model": {"m": RECENT + 300}, "template": {"t": 175}}


def test_counts_by_name_stay_bounded():
    stats = RequestStats()
    for i in range(1000):
        stats.finished(_finished(i, model=f"model-{i % 300}" if i % 3 else "popular"))
    models = stats.counts_by()["model"]
    assert len(models) <= 64
    assert sum(models.values()) == 1000
    assert models["popular"] == 334  # the largest names keep their own count
    assert OTHER in models


def test_entries_by_namespace():
    now = [100.0]
    memory = MemoryTier(max_bytes=1 << 20, clock=lambda: now[0])
    entry = CacheEntry(b"x" * 100, stored_at=now[0], content_type="claude_response")
    memory.set_now("pr:default:claude_response:a", entry, 60)
    memory.set_now("pr:default:claude_response:b", entry, 5)
    memory.set_now("pr:abc123:claude_response:c", entry, 60)
    found = memory.by_namespace()
    assert list(found) == ["abc123", "default"]
    assert found["default"]["entries"] == 2 and found["default"]["bytes"] > 200
    now[0] += 10  # b expired
    assert memory.by_namespace()["default"]["entries"] == 1
