"""Typed events the pipeline emits; telemetry (and anything else) subscribes.

Business code calls `bus.emit(SomeEvent(...))` and never imports telemetry. Emitting with
no listener costs one attribute check; a listener that raises is logged, never
propagated into the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BatchFlushed",
    "BreakerMoved",
    "CacheLookup",
    "Coalesced",
    "Event",
    "EventBus",
    "MemoryGuardActed",
    "RedisMoved",
    "RequestFinished",
    "Retried",
    "UpstreamFinished",
]

log = logging.getLogger("promptrelay.events")


@dataclass(frozen=True, slots=True)
class CacheLookup:
    hit: bool
    content_type: str
    saved_ms: float = 0.0  # the upstream time the stored answer took originally
    saved_tokens: int = 0
    model: str = ""  # of the stored answer, to price what a hit saved
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Coalesced:
    stream: bool


@dataclass(frozen=True, slots=True)
class Retried:
    attempt: int
    delay: float
    status: int | None


@dataclass(frozen=True, slots=True)
class UpstreamFinished:
    status: int | None
    seconds: float
    attempts: int


@dataclass(frozen=True, slots=True)
class BreakerMoved:
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchFlushed:
    """A micro-batch group left for the normal path."""

    model: str
    size: int
    waited_ms: float  # how long its oldest item waited in the window


@dataclass(frozen=True, slots=True)
class RedisMoved:
    state: str  # "up" | "down"


@dataclass(frozen=True, slots=True)
class MemoryGuardActed:
    """The memory guard did something: trim, collect, aggressive_on, aggressive_off."""

    action: str
    pressure: float  # RSS / memory limit when it acted
    freed_bytes: int = 0  # trim: bytes shed from the memory tier
    seconds: float = 0.0  # collect: how long the collection stalled the loop


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """One HTTP request on a hot route, timed in stages.

    `ttfb` runs until the status line went out; `upstream_seconds` is the part of it
    spent waiting for the upstream (or a shared call), so `ttfb - upstream_seconds` is
    promptrelay's own added time. Status 499: the client left before the answer.
    """

    route: str
    status: int
    cache: str
    seconds: float
    ttfb: float = 0.0
    upstream_seconds: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0
    stream: bool = False


Event = (
    CacheLookup
    | Coalesced
    | Retried
    | UpstreamFinished
    | BreakerMoved
    | BatchFlushed
    | RedisMoved
    | RequestFinished
    | MemoryGuardActed
)
Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def active(self) -> bool:
        """Anyone listening? Emitters may skip building an event when not."""
        return bool(self._listeners)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", type(event).__name__)
