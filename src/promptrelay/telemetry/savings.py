"""What the cache saved: upstream time and tokens, counted from cache lookup events.

With telemetry on, `RequestStats` counts the same events, so this listener is only
subscribed with telemetry off (one count per event, not two); `saved_by_cache` gives
the same snapshot from the statistics.
"""

from __future__ import annotations

from typing import Any

from promptrelay.core.events import CacheLookup
from promptrelay.telemetry.stats import RequestStats

__all__ = ["CacheSavings", "saved_by_cache"]


class CacheSavings:
    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.saved_seconds = 0.0
        self.saved_tokens = 0

    def __call__(self, event: CacheLookup) -> None:
        if event.hit:
            self.hits += 1
            self.saved_seconds += event.saved_ms / 1000
            self.saved_tokens += event.saved_tokens
        else:
            self.misses += 1

    def snapshot(self) -> dict[str, Any]:
        return _snapshot(self.hits, self.misses, self.saved_seconds, self.saved_tokens)


def saved_by_cache(stats: RequestStats) -> dict[str, Any]:
    stats.drain()
    return _snapshot(stats.hits, stats.misses, stats.saved_seconds, stats.saved_tokens)


def _snapshot(hits: int, misses: int, seconds: float, tokens: int) -> dict[str, Any]:
    return {
        "hits": hits,
        "misses": misses,
        "upstream_seconds_saved": round(seconds, 3),
        "tokens_saved": tokens,
    }
