"""What the server layer allows a client connection, and the pure rules that apply it.

A connection is always in one phase:

    HEAD   the next request head is arriving (from the connection's start, or from the
           first byte of a later request on a kept-alive connection)
    BODY   the head is complete and the body is arriving
    IDLE   the request is complete: the app is answering, or the connection waits for
           the next request (uvicorn's keep-alive timeout governs that wait)

Rules: HEAD ends within `head_timeout` of its start; in BODY no silence lasts longer than
`body_idle_timeout`; IDLE has no deadline of ours. `time_left` decides, the protocol
(`promptrelay.server.protocol`) only performs what it says.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from enum import IntEnum

from promptrelay.settings import Settings

__all__ = ["FD_MARGIN", "Phase", "ServerLimits", "default_max_connections", "time_left"]

# File descriptors kept free for everything that is not a client or upstream connection:
# the listening socket, the event loop's own, logs, the template database, metric files.
FD_MARGIN = 64
MIN_CONNECTIONS = 16


class Phase(IntEnum):
    HEAD = 0
    BODY = 1
    IDLE = 2


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int = 64 * 1024
    head_timeout: float = 30.0
    body_idle_timeout: float = 30.0
    max_connections: int = 1024
    retry_after: int = 1  # seconds, in the 503 beyond max_connections
    linger: float = 2.0  # seconds an answered error waits for the client to stop sending
    # Connections beyond max_connections that get the polite close (503, then `linger`);
    # past these, a refused connection is closed as soon as its 503 is written, so a
    # flood of connections cannot hold `linger` seconds of descriptors each.
    lingering_refusals: int = 32

    @classmethod
    def from_settings(cls, settings: Settings, nofile: int | None = None) -> ServerLimits:
        """Limits from Settings; MAX_CONNECTIONS unset is derived from RLIMIT_NOFILE."""
        connections = settings.max_connections
        if connections is None:
            connections = default_max_connections(settings, _nofile() if nofile is None else nofile)
        return cls(
            max_header_bytes=settings.max_header_bytes,
            head_timeout=settings.head_timeout,
            body_idle_timeout=settings.body_idle_timeout,
            max_connections=connections,
        )

    @property
    def watch_interval(self) -> float:
        """The longest a connection's watch may sleep without missing a deadline."""
        return min(self.head_timeout, self.body_idle_timeout)


def default_max_connections(settings: Settings, nofile: int) -> int:
    """RLIMIT_NOFILE minus the upstream pool, the Redis pool (when enabled) and a margin.

    Each process has its own descriptor table, so with WORKERS > 1 this is per worker.
    """
    redis = settings.redis_max_connections if settings.redis_enabled else 0
    return max(MIN_CONNECTIONS, nofile - settings.max_sockets - redis - FD_MARGIN)


def _nofile() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def time_left(phase: Phase, since: float, now: float, limits: ServerLimits) -> float | None:
    """Seconds until the phase's deadline (<= 0: expired); None when the phase has none."""
    if phase is Phase.HEAD:
        return since + limits.head_timeout - now
    if phase is Phase.BODY:
        return since + limits.body_idle_timeout - now
    return None
