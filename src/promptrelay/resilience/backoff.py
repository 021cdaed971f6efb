"""Exponential backoff as data: how long to wait before attempt number `attempt + 1`.

    Backoff(base=0.5, factor=2, cap=10).compute(attempt)      0.5, 1, 2, 4, 8, 10, 10, ...
    Backoff(...).jittered(attempt, rng)                       uniform(0, compute(attempt))

The one backoff policy: upstream retries (`RetryPolicy`, with full jitter), Redis health
probes (`cache/health.py`) and alert webhook deliveries (`telemetry/delivery.py`). The
loops that sleep live with their callers; this module only computes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]

_MAX_EXPONENT = 64  # factor**attempt overflows a float near 1024; the cap is long reached


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds to wait after failed attempt number `attempt` (0-based)."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 10.0

    def compute(self, attempt: int) -> float:
        return min(self.cap, self.base * self.factor ** min(attempt, _MAX_EXPONENT))

    def jittered(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform(0, compute(attempt)), so retrying clients spread out."""
        return (rng or random).uniform(0.0, self.compute(attempt))
