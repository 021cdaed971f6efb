"""Plain-language recommendations: a pure function of one snapshot and the settings.

Each recommendation is `{area, severity, message, evidence}`; `evidence` holds the
number that triggered it, and where a setting is the remedy, `setting` and
`suggested` name it and a value to try.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promptrelay.telemetry.snapshot import Snapshot, Tuning

__all__ = ["governor_advice", "recommend"]

Advice = dict[str, Any]
_MIB = 2**20


def _advice(area: str, severity: str, message: str, evidence: dict[str, Any], **fix: Any) -> Advice:
    return {"area": area, "severity": severity, "message": message, "evidence": evidence, **fix}


def _memory(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.memory_fraction <= 0.85:
        return []
    cache_share = s.memory_cache_bytes / s.rss_bytes if s.rss_bytes else 0.0
    evidence = {
        "memory_fraction": round(s.memory_fraction, 3),
        "rss_bytes": s.rss_bytes,
        "memory_limit_bytes": s.memory_limit_bytes,
        "memory_cache_bytes": s.memory_cache_bytes,
    }
    advice = [
        _advice(
            "memory",
            "high",
            f"RSS is {s.memory_fraction:.0%} of the memory limit; the memory cache holds "
            f"{s.memory_cache_bytes / _MIB:.0f} MiB ({cache_share:.0%} of RSS). Shrink it "
            "(Redis keeps serving what it drops) or give the process more memory.",
            evidence,
            setting="MEMORY_CACHE_MAX_BYTES",
            suggested=max(_MIB, t.memory_cache_max_bytes // 2),
        )
    ]
    if not s.aggressive_gc and t.gc_threshold > 0.6:
        advice.append(
            _advice(
                "memory",
                "medium",
                "Start the memory guard (trim + collection) earlier so it acts before the "
                "alert threshold.",
                evidence,
                setting="GC_THRESHOLD",
                suggested=round(max(0.5, t.gc_threshold - 0.1), 2),
            )
        )
    return advice


def _cpu(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.cpu_percent < 85:
        return []
    evidence = {"cpu_percent": round(s.cpu_percent, 1), "workers": t.workers}
    if t.workers < t.cpu_count:
        return [
            _advice(
                "cpu",
                "high",
                f"One worker is using {s.cpu_percent:.0f}% of a core; this machine has "
                f"{t.cpu_count} cores. Run more worker processes.",
                evidence,
                setting="WORKERS",
                suggested=min(t.cpu_count, t.workers * 2),
            )
        ]
    return [
        _advice(
            "cpu",
            "high",
            f"CPU at {s.cpu_percent:.0f}% with a worker per core: add machines behind a "
            "load balancer sharing one Redis, or queue requests in front.",
            evidence,
        )
    ]


def _cache(s: Snapshot, t: Tuning) -> list[Advice]:
    lookups = s.hits + s.misses
    if lookups < 20 or s.hit_ratio >= 0.3 or s.miss_p50_ms < 2000:
        return []
    evidence = {"hit_ratio": round(s.hit_ratio, 3), "miss_p50_ms": round(s.miss_p50_ms, 1)}
    return [
        _advice(
            "cache",
            "medium",
            f"Answers are slow (miss p50 {s.miss_p50_ms / 1000:.1f} s) and only "
            f"{s.hit_ratio:.0%} come from the cache: keep answers longer, or warm the cache "
            "with known prompts (`promptrelay cache warm FILE.jsonl`).",
            evidence,
            setting="CACHE_TTL_CLAUDE_RESPONSE",
            suggested=t.cache_ttl_claude_response * 4,
        )
    ]


def _pool(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.pool_waiting <= 0 and (s.pool_limit == 0 or s.pool_in_use < s.pool_limit):
        return []
    evidence = {
        "pool_waiting": s.pool_waiting,
        "pool_in_use": s.pool_in_use,
        "pool_limit": s.pool_limit,
    }
    return [
        _advice(
            "upstream",
            "high",
            f"{s.pool_waiting} requests are waiting for one of the {s.pool_limit} upstream "
            "connections, all in use: raise the pool size (mind Anthropic's rate limits).",
            evidence,
            setting="MAX_SOCKETS",
            suggested=max(t.max_sockets * 2, s.pool_limit * 2),
        )
    ]


def _breaker(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.breaker_opens_recent < 3:
        return []
    evidence = {"breaker_opens_10m": s.breaker_opens_recent, "breaker_state": s.breaker_state}
    return [
        _advice(
            "upstream",
            "high",
            f"The circuit breaker opened {s.breaker_opens_recent} times in 10 minutes: the "
            "upstream is failing on and off. Check Anthropic's status page and the error "
            "statuses in /api/performance; the breaker is doing its job.",
            evidence,
        )
    ]


def _redis(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.redis_state != "down":
        return []
    return [
        _advice(
            "redis",
            "medium",
            "Redis is down: each process answers from its own memory tier only, so hit "
            "rates drop and the breaker state is no longer shared. Bring Redis back; "
            "nothing fails meanwhile.",
            {"redis_state": s.redis_state},
        )
    ]


def _loop(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.loop_lag_ms < 100:
        return []
    return [
        _advice(
            "cpu",
            "medium",
            f"The event loop stalled for {s.loop_lag_ms:.0f} ms: something blocks it (large "
            "bodies, a full garbage collection, CPU starvation). Every request in flight "
            "waits that long.",
            {"loop_lag_ms": round(s.loop_lag_ms, 1)},
        )
    ]


def _errors(s: Snapshot, t: Tuning) -> list[Advice]:
    if s.requests_window < 10 or s.error_rate < 0.1:
        return []
    return [
        _advice(
            "upstream",
            "high",
            f"{s.error_rate:.0%} of recent requests failed with 5xx: see the upstream "
            "statuses and the breaker in /api/performance.",
            {"error_rate": round(s.error_rate, 3), "requests": s.requests_window},
        )
    ]


_RULES: tuple[Callable[[Snapshot, Tuning], list[Advice]], ...] = (
    _memory,
    _cpu,
    _loop,
    _cache,
    _pool,
    _errors,
    _breaker,
    _redis,
)


def recommend(snapshot: Snapshot, tuning: Tuning) -> list[Advice]:
    return [advice for rule in _RULES for advice in rule(snapshot, tuning)]


def governor_advice(governor: dict[str, Any] | None) -> list[Advice]:
    """Advice from the governor's snapshot (resilience/governor.py `snapshot`)."""
    if not governor:
        return []
    advice: list[Advice] = []
    evidence = {key: governor.get(key) for key in ("queued_total", "waited_seconds", "rejected")}
    if governor.get("rejected"):
        advice.append(
            _advice(
                "rate_limits",
                "high",
                f"{governor['rejected']} requests got a 429 from promptrelay because the "
                "upstream's rate limit would not refill in time. Ask Anthropic for a higher "
                "limit, spread the workflows over time, or let requests wait longer.",
                evidence,
                setting="GOVERNOR_MAX_WAIT",
            )
        )
    elif governor.get("queued_total"):
        advice.append(
            _advice(
                "rate_limits",
                "low",
                f"{governor['queued_total']} requests waited for the upstream's rate limit "
                f"({governor.get('waited_seconds', 0):.1f} s in all) instead of failing "
                "with a 429: the limit is being reached.",
                evidence,
            )
        )
    if governor.get("upstream_429"):
        advice.append(
            _advice(
                "rate_limits",
                "medium",
                f"The upstream answered 429 {governor['upstream_429']} times although "
                "promptrelay paces by its headers: another client probably shares the key.",
                {"upstream_429": governor["upstream_429"]},
            )
        )
    return advice
