"""Whether the Redis tier should be used right now: a pure state machine.

    state  event                         -> state  effect
    up     success                       -> up     consecutive timeouts reset
    up     timeout (K-th in a row)       -> down   cool-off starts
    up     connection error              -> down   cool-off starts
    down   (any request)                 -> down   skipped: no network call at all
    down   probe answered (PING)         -> up
    down   probe failed                  -> down   next cool-off = previous x factor (capped)

Cool-offs grow while Redis keeps failing: each failed probe doubles the wait (0.5 s,
1 s, ... 10 s), and a tier that falls down again within ``stable_after`` seconds of
coming up resumes the backoff where it left off instead of restarting at the base, so
a flapping Redis is not hammered. The async shell (``cache/redis.py``) performs the
network calls and feeds their outcomes in; this module never sleeps or does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from promptrelay.resilience.backoff import Backoff

__all__ = ["DOWN", "UP", "Backoff", "RedisHealth"]

UP = "up"
DOWN = "down"


class RedisHealth:
    """Tracks up/down; every transition method returns True when the state changed."""

    def __init__(
        self,
        *,
        timeout_threshold: int = 3,
        backoff: Backoff | None = None,
        stable_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_threshold < 1:
            raise ValueError("timeout_threshold must be at least 1")
        self.timeout_threshold = timeout_threshold
        self.backoff = backoff or Backoff()
        self.stable_after = stable_after
        self._clock = clock
        # Starts down: nothing is known until the first probe answers.
        self.is_up = False
        self.consecutive_timeouts = 0
        self.attempt = 0
        self.transitions = 0
        self._up_since: float | None = None

    @property
    def state(self) -> str:
        return UP if self.is_up else DOWN

    def cool_off(self) -> float:
        """Seconds to stay down (skipping Redis) before the next probe."""
        return self.backoff.compute(self.attempt)

    def record_success(self) -> None:
        self.consecutive_timeouts = 0

    def record_timeout(self) -> bool:
        self.consecutive_timeouts += 1
        if self.is_up and self.consecutive_timeouts >= self.timeout_threshold:
            return self._go_down()
        return False

    def record_connection_error(self) -> bool:
        return self._go_down() if self.is_up else False

    def probe_succeeded(self) -> bool:
        self.consecutive_timeouts = 0
        if self.is_up:
            return False
        self.is_up = True
        self._up_since = self._clock()
        self.transitions += 1
        return True

    def probe_failed(self) -> None:
        self.attempt += 1

    def _go_down(self) -> bool:
        now = self._clock()
        flapping = self._up_since is not None and now - self._up_since < self.stable_after
        self.attempt = self.attempt + 1 if flapping else 0
        self.is_up = False
        self.consecutive_timeouts = 0
        self.transitions += 1
        return True
