"""The fake upstream's rate limits: token buckets per API key, as Anthropic enforces them.

Pure code with injected clocks; `FakeUpstream` asks it once per `POST /v1/messages`.

Rules (Anthropic's, as documented for its Messages API):
- Three buckets per key: requests, input tokens, output tokens. Each holds at most its
  capacity and refills continuously at its rate; a bucket whose capacity is None is off.
- A request needs one request and its input tokens (cache reads excluded: the caller
  passes what counts) and reserves `max_tokens` of output; once its answer is known the
  reservation is settled to the real output tokens.
- A request that does not fit is refused whole (nothing taken) with a 429 and a
  retry-after: the seconds until every bucket it needs holds enough again.
- Headers on every answer, 429s included: `anthropic-ratelimit-{requests,input-tokens,
  output-tokens,tokens}-{limit,remaining,reset}`; reset is the RFC 3339 time at which
  the bucket is full again; `tokens-*` is the more restrictive of input and output.
- Capacity and rate are read from the config on every request, so changing them while
  the server runs takes effect at once (a smaller capacity also caps the level).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["BucketSpec", "FakeLimits", "Verdict"]

REQUESTS, INPUT, OUTPUT = "requests", "input-tokens", "output-tokens"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    capacity: float | None  # None: this bucket is off
    per_second: float


@dataclass(slots=True)
class _Level:
    level: float
    at: float


@dataclass(slots=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0
    limit: str = ""  # which bucket refused, for the error message


@dataclass(slots=True)
class _Key:
    levels: dict[str, _Level] = field(default_factory=dict)


class FakeLimits:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._keys: dict[str, _Key] = {}

    def reset(self) -> None:
        """Every bucket full again."""
        self._keys.clear()

    def admit(
        self, key: str, specs: dict[str, BucketSpec], input_tokens: int, max_tokens: int
    ) -> Verdict:
        """Take one request, its input tokens and `max_tokens` of output, or refuse."""
        now = self._clock()
        state = self._keys.setdefault(key, _Key())
        need = {REQUESTS: 1.0, INPUT: float(input_tokens), OUTPUT: float(max_tokens)}
        levels = {name: self._refill(state, name, spec, now) for name, spec in specs.items()}
        waits = {
            name: _wait(levels[name], need[name], spec)
            for name, spec in specs.items()
            if spec.capacity is not None and levels[name] < need[name]
        }
        if waits:
            worst = max(waits, key=lambda name: waits[name])
            return Verdict(False, self._headers(state, specs, now), waits[worst], worst)
        for name, spec in specs.items():
            if spec.capacity is not None:
                state.levels[name].level -= need[name]
        return Verdict(True, self._headers(state, specs, now))

    def settle(self, key: str, specs: dict[str, BucketSpec], reserved: int, used: int) -> None:
        """Give back the output tokens reserved but not produced."""
        spec = specs.get(OUTPUT)
        state = self._keys.get(key)
        if spec is None or spec.capacity is None or state is None:
            return
        self._refill(state, OUTPUT, spec, self._clock())
        level = state.levels[OUTPUT]
        level.level = min(spec.capacity, level.level + max(0, reserved - used))

    def _refill(self, state: _Key, name: str, spec: BucketSpec, now: float) -> float:
        if spec.capacity is None:
            return math.inf
        current = state.levels.get(name)
        if current is None:
            current = state.levels[name] = _Level(spec.capacity, now)
        current.level = min(spec.capacity, current.level + (now - current.at) * spec.per_second)
        current.at = now
        return current.level

    def _headers(self, state: _Key, specs: dict[str, BucketSpec], now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        tightest: tuple[float, str] | None = None
        for name, spec in specs.items():
            if spec.capacity is None:
                continue
            level = state.levels[name].level
            full_in = _wait(level, spec.capacity, spec)
            prefix = f"anthropic-ratelimit-{name}"
            headers[f"{prefix}-limit"] = str(int(spec.capacity))
            headers[f"{prefix}-remaining"] = str(max(0, math.floor(level)))
            if math.isfinite(full_in):  # a bucket that never refills has no reset time
                headers[f"{prefix}-reset"] = _rfc3339(self._wall() + full_in)
            if name != REQUESTS and (tightest is None or level / spec.capacity < tightest[0]):
                tightest = (level / spec.capacity, name)
        if tightest is not None:
            source = f"anthropic-ratelimit-{tightest[1]}"
            for part in ("limit", "remaining", "reset"):
                if f"{source}-{part}" in headers:
                    headers[f"anthropic-ratelimit-tokens-{part}"] = headers[f"{source}-{part}"]
        return headers


def _wait(level: float, need: float, spec: BucketSpec) -> float:
    if level >= need:
        return 0.0
    if spec.per_second <= 0:
        return math.inf
    return (need - level) / spec.per_second


def _rfc3339(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
