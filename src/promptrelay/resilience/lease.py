"""The half-open probe's lease on the shared probe lock: pure decisions, no I/O.

Rules
-----

    claim / renew     TTL = min(duration, seconds left before the probe's head deadline):
                      a holder that dies frees the lock within `duration`, and a live
                      holder's lock never outlasts the moment its probe counts as failed.
    renewal period    every duration / 3 while the probe runs, so two renewals in a row
                      can fail (a slow Redis) before the lock lapses under a live probe;
                      the last wait ends exactly at the head deadline, when the holder
                      judges its silent probe failed and lets the lock go.
    deadline passed   no more renewals: the probe has had its time.
    refused callers   told when the probe will have decided, at most one lease away:
                      the seconds left before a local probe's head deadline, capped at
                      `duration`; `duration` when another process holds the probe.

Usage::

    lease = ProbeLease(duration=5.0)
    left = machine.probe_seconds_left()       # None: no probe in flight
    ttl = lease.ttl(left)                     # None: let the lock lapse
    wait = lease.renew_in(left)               # None: stop renewing
    retry_after = lease.retry_after(left)     # for a 503 while half-open
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProbeLease"]


@dataclass(frozen=True, slots=True)
class ProbeLease:
    """Seconds the shared probe lock is held for at a time; see the module rules."""

    duration: float = 5.0

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError("the probe lease must be longer than 0 s")

    def ttl(self, left: float | None) -> float | None:
        """TTL to claim or renew the lock with; None once the head deadline has passed."""
        if left is None or left <= 0:
            return None
        return min(self.duration, left)

    def renew_in(self, left: float | None) -> float | None:
        """Seconds until the next renewal (or the deadline); None: stop renewing."""
        if left is None or left <= 0:
            return None
        return min(self.duration / 3, left)

    def retry_after(self, left: float | None) -> float:
        """Retry-After for a caller refused while half-open.

        `left`: seconds before this process's own probe counts as failed; None when the
        probe runs in another process (its holder renews one lease at a time).
        """
        if left is None:
            return self.duration
        return max(0.0, min(left, self.duration))
