"""Alert rules (pure) and the alert state machine (pure, with an injected clock).

Rules: `evaluate(snapshot, thresholds)` returns the conditions that hold now, each with
a key, a base severity, the measured value and the threshold:

    key          fires when                                        base severity
    memory       RSS / limit >= MEMORY_THRESHOLD                   medium (critical >= 0.95)
    cpu          process CPU % >= ALERT_CPU_PERCENT                medium
    slow         window p95 of promptrelay's added time, or of a   medium
                 stream's time to first byte, >= ALERT_SLOW_SECONDS
    error_rate   5xx / requests over the sliding window >=         high (critical >= 0.5)
                 ALERT_ERROR_RATE, with >= ALERT_MIN_REQUESTS
    loop_lag     worst event-loop lag >= ALERT_LOOP_LAG_MS         medium (high >= 10x)
    breaker      the upstream circuit breaker is open              high
    redis        Redis enabled and down                            medium

State (`AlertManager.step`), once per sampling period:
- a new condition fires (notice "firing") unless the same key fired less than
  `cooldown` seconds ago: then it is active but silent (no notice, no escalation, no
  resolved notice) until the cooldown is over, when it fires if it still holds;
- a condition that holds `escalate_after` consecutive periods goes up one severity
  (notice "escalated"), again after each further `escalate_after`, up to critical;
- a condition that no longer holds is resolved (notice "resolved" if its firing was
  delivered).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptrelay.telemetry.snapshot import Snapshot

__all__ = [
    "SEVERITIES",
    "AlertManager",
    "Condition",
    "Notice",
    "Thresholds",
    "evaluate",
]

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Thresholds:
    memory_fraction: float = 0.8
    cpu_percent: float = 90.0
    slow_seconds: float = 5.0
    error_rate: float = 0.1
    min_requests: int = 10
    loop_lag_ms: float = 100.0


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    severity: str
    message: str
    value: float
    threshold: float


def _memory(s: Snapshot, t: Thresholds) -> Condition | None:
    fraction = s.memory_fraction
    if fraction < t.memory_fraction:
        return None
    severity = "critical" if fraction >= 0.95 else "medium"
    message = (
        f"RSS {s.rss_bytes / 2**20:.0f} MiB is {fraction:.0%} of the "
        f"{s.memory_limit_bytes / 2**20:.0f} MiB memory limit"
    )
    return Condition("memory", severity, message, round(fraction, 4), t.memory_fraction)


def _cpu(s: Snapshot, t: Thresholds) -> Condition | None:
    if s.cpu_percent < t.cpu_percent:
        return None
    message = f"process CPU at {s.cpu_percent:.0f}% of a core"
    return Condition("cpu", "medium", message, round(s.cpu_percent, 1), t.cpu_percent)


def _slow(s: Snapshot, t: Thresholds) -> Condition | None:
    limit_ms = t.slow_seconds * 1000
    worst = max(s.added_p95_ms, s.stream_ttfb_p95_ms)
    if worst < limit_ms:
        return None
    what = (
        "promptrelay's own added time"
        if s.added_p95_ms >= s.stream_ttfb_p95_ms
        else "streams' time to first byte"
    )
    message = f"p95 of {what} is {worst / 1000:.1f} s over the last {s.error_window_s:.0f} s"
    return Condition("slow", "medium", message, round(worst, 1), limit_ms)


def _error_rate(s: Snapshot, t: Thresholds) -> Condition | None:
    if s.requests_window < t.min_requests or s.error_rate < t.error_rate:
        return None
    severity = "critical" if s.error_rate >= 0.5 else "high"
    message = (
        f"{s.errors_window} of {s.requests_window} requests failed (5xx) "
        f"in the last {s.error_window_s:.0f} s ({s.error_rate:.0%})"
    )
    return Condition("error_rate", severity, message, round(s.error_rate, 4), t.error_rate)


def _loop_lag(s: Snapshot, t: Thresholds) -> Condition | None:
    if s.loop_lag_ms < t.loop_lag_ms:
        return None
    severity = "high" if s.loop_lag_ms >= 10 * t.loop_lag_ms else "medium"
    message = f"event loop was blocked for {s.loop_lag_ms:.0f} ms"
    return Condition("loop_lag", severity, message, round(s.loop_lag_ms, 1), t.loop_lag_ms)


def _breaker(s: Snapshot, t: Thresholds) -> Condition | None:
    if s.breaker_state != "open":
        return None
    message = "upstream circuit breaker is open: misses fail fast with 503"
    return Condition("breaker", "high", message, 1.0, 1.0)


def _redis(s: Snapshot, t: Thresholds) -> Condition | None:
    if s.redis_state != "down":
        return None
    message = "Redis is down: cache degraded to this process's memory tier"
    return Condition("redis", "medium", message, 1.0, 1.0)


RULES: tuple[Callable[[Snapshot, Thresholds], Condition | None], ...] = (
    _memory,
    _cpu,
    _slow,
    _error_rate,
    _loop_lag,
    _breaker,
    _redis,
)


def evaluate(snapshot: Snapshot, thresholds: Thresholds) -> list[Condition]:
    return [c for rule in RULES if (c := rule(snapshot, thresholds)) is not None]


# -- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Active:
    condition: Condition
    severity: str
    since: float
    periods: int = 1
    delivered: bool = False

    def as_dict(self, now: float) -> dict[str, Any]:
        c = self.condition
        return {
            "key": c.key,
            "severity": self.severity,
            "message": c.message,
            "value": c.value,
            "threshold": c.threshold,
            "active_for_s": round(now - self.since, 1),
            "periods": self.periods,
        }


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to deliver: kind is firing, escalated or resolved."""

    kind: str
    key: str
    severity: str
    message: str
    value: float
    threshold: float
    at: float  # the manager's clock
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "severity": self.severity,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            **self.extra,
        }


def _raise(severity: str, steps: int) -> str:
    return SEVERITIES[min(len(SEVERITIES) - 1, SEVERITIES.index(severity) + steps)]


class AlertManager:
    def __init__(
        self,
        *,
        cooldown: float = 60.0,
        escalate_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
        keep: int = 100,
    ) -> None:
        self.cooldown = cooldown
        self.escalate_after = escalate_after
        self._clock = clock
        self._active: dict[str, _Active] = {}
        self._fired_at: dict[str, float] = {}
        self.recent: deque[Notice] = deque(maxlen=keep)

    def step(self, conditions: list[Condition]) -> list[Notice]:
        now = self._clock()
        notices: list[Notice] = []
        seen = set()
        for condition in conditions:
            seen.add(condition.key)
            active = self._active.get(condition.key)
            if active is None:
                notices += self._open(condition, now)
            else:
                notices += self._continue(active, condition, now)
        for key in [key for key in self._active if key not in seen]:
            active = self._active.pop(key)
            if active.delivered:
                notices.append(self._notice("resolved", active, now))
        self.recent.extend(notices)
        return notices

    def _open(self, condition: Condition, now: float) -> list[Notice]:
        active = _Active(condition, condition.severity, since=now)
        self._active[condition.key] = active
        last = self._fired_at.get(condition.key)
        if last is not None and now - last < self.cooldown:
            return []  # same alert again inside its cooldown: stay silent
        self._fired_at[condition.key] = now
        active.delivered = True
        return [self._notice("firing", active, now)]

    def _continue(self, active: _Active, condition: Condition, now: float) -> list[Notice]:
        active.periods += 1
        steps = (active.periods - 1) // self.escalate_after
        severity = _raise(condition.severity, steps)
        worse = SEVERITIES.index(severity) > SEVERITIES.index(active.severity)
        active.condition = condition
        if worse:
            active.severity = severity
        if active.delivered:
            if not worse:
                return []
            self._fired_at[condition.key] = now
            return [self._notice("escalated", active, now)]
        # silenced by the cooldown when it opened: speak once the cooldown is over
        if now - self._fired_at.get(condition.key, now) < self.cooldown:
            return []
        self._fired_at[condition.key] = now
        active.delivered = True
        return [self._notice("firing", active, now)]

    def _notice(self, kind: str, active: _Active, now: float) -> Notice:
        c = active.condition
        return Notice(
            kind,
            c.key,
            active.severity,
            c.message,
            c.value,
            c.threshold,
            now,
            {"active_for_s": round(now - active.since, 1), "periods": active.periods},
        )

    def active(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [a.as_dict(now) for a in self._active.values()]
