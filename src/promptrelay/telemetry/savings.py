"""What the cache saved: upstream time and tokens, counted from cache lookup events."""

from __future__ import annotations

from typing import Any

from promptrelay.core.events import CacheLookup, Event

__all__ = ["CacheSavings"]


class CacheSavings:
    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.saved_seconds = 0.0
        self.saved_tokens = 0

    def __call__(self, event: Event) -> None:
        if not isinstance(event, CacheLookup):
            return
        if event.hit:
            self.hits += 1
            self.saved_seconds += event.saved_ms / 1000
            self.saved_tokens += event.saved_tokens
        else:
            self.misses += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "upstream_seconds_saved": round(self.saved_seconds, 3),
            "tokens_saved": self.saved_tokens,
        }
