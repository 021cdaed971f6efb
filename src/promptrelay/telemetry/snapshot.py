"""One sampling period's facts, the input of the alert rules and the recommendations.

A `Snapshot` is plain numbers, built by the telemetry service from the system sample,
the request statistics and a few component gauges; the rules and recommendations are
pure functions of it, so tests build snapshots by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Snapshot", "Tuning"]


@dataclass(frozen=True, slots=True)
class Tuning:
    """The settings the recommendations talk about, with their current values."""

    workers: int = 1
    cpu_count: int = 2
    max_sockets: int = 50
    memory_cache_max_bytes: int = 64 * 1024 * 1024
    cache_ttl_claude_response: int = 1800
    gc_threshold: float = 0.7
    redis_enabled: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float = 0.0  # wall clock, for humans
    rss_bytes: int = 0
    memory_limit_bytes: int = 1
    cpu_percent: float = 0.0
    loop_lag_ms: float = 0.0
    open_fds: int = 0
    requests_window: int = 0  # requests in the sliding error window
    errors_window: int = 0
    error_window_s: float = 60.0
    added_p95_ms: float = 0.0  # promptrelay's own time before the first byte, window p95
    stream_ttfb_p95_ms: float = 0.0
    miss_p50_ms: float = 0.0
    hits: int = 0
    misses: int = 0
    pool_limit: int = 0
    pool_in_use: int = 0
    pool_waiting: int = 0  # requests queued for an upstream connection right now
    pool_waits_total: int = 0
    breaker_state: str = "closed"
    breaker_opens_recent: int = 0  # times it opened in the last 10 minutes
    redis_state: str = "disabled"
    memory_cache_bytes: int = 0
    aggressive_gc: bool = False

    @property
    def memory_fraction(self) -> float:
        return self.rss_bytes / self.memory_limit_bytes if self.memory_limit_bytes else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors_window / self.requests_window if self.requests_window else 0.0

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_fraction"] = round(self.memory_fraction, 4)
        data["error_rate"] = round(self.error_rate, 4)
        data["hit_ratio"] = round(self.hit_ratio, 4)
        return data
