"""What the caches saved: promptrelay's (upstream time and tokens, from cache lookup
events) and Anthropic's prompt cache (dollars, from `PromptCacheUsed`).

With telemetry on, `RequestStats` counts the lookup events, so `CacheSavings` is only
subscribed with telemetry off (one count per event, not two); `saved_by_cache` gives
the same snapshot from the statistics. `PromptCacheSavings` is telemetry's.

What Anthropic's prompt cache saved, per answer: the cached tokens priced as plain input
less what they cost, reads at 0.1x the input price, writes at 1.25x (5 min) or 2x (1 h):
`read x 0.9 - written_5m x 0.25 - written_1h x 1.0` input prices. Writes cost more than
plain input, so the total is below zero until the reads have paid for them.
"""

from __future__ import annotations

from typing import Any

from promptrelay.core.events import CacheLookup, PromptCacheUsed
from promptrelay.core.prompt_cache import READ, WRITE_1H, WRITE_5M
from promptrelay.telemetry.prices import PriceFn, chain_prices
from promptrelay.telemetry.stats import RequestStats

__all__ = ["CacheSavings", "PromptCacheSavings", "saved_by_cache"]


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


class PromptCacheSavings:
    """Listener of `PromptCacheUsed`: Anthropic's prompt cache, in tokens and dollars."""

    def __init__(self, price: PriceFn | None = None) -> None:
        self._price = chain_prices(price)
        self.answers = 0
        self.read = 0
        self.written = 0
        self.written_1h = 0
        self.dollars = 0.0
        self.unpriced = 0  # answers of models without a price

    def __call__(self, event: PromptCacheUsed) -> None:
        self.answers += 1
        self.read += event.read
        self.written += event.created
        self.written_1h += event.created_1h
        price = self._price(event.model) if event.model else None
        if price is None:
            self.unpriced += 1
            return
        five_min = max(0, event.created - event.created_1h)
        plain_units = (
            event.read * (1 - READ) + five_min * (1 - WRITE_5M) + event.created_1h * (1 - WRITE_1H)
        )
        self.dollars += plain_units * price[0] / 1e6

    def snapshot(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "read_tokens": self.read,
            "written_tokens": self.written,
            "written_1h_tokens": self.written_1h,
            "dollars_saved": round(self.dollars, 6),
            "unpriced_answers": self.unpriced,
        }
