"""What every cache tier stores and the interface every tier offers.

Keys are strings shaped ``pr:{namespace}:{content_type}:{hash}``; they are built in
``cache/keys.py``. Patterns given to ``clear`` are Redis-style globs over the whole key
(``pr:tenantA:*``), matched the same way by every tier (see ``cache/glob.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = ["CacheEntry", "CacheTier", "ContentType", "content_type_of"]

MetaValue = str | int | float


class ContentType(StrEnum):
    """Content types with their own TTL policy; any other string is allowed too."""

    CLAUDE_RESPONSE = "claude_response"
    TEMPLATE_CONTENT = "template_content"
    PROVIDER_CONFIG = "provider_config"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached answer.

    ``stored_at`` is wall-clock time (epoch seconds) when the answer was produced; it
    drives ``max_age``. ``expires_at`` is wall-clock expiry; callers leave it ``None``
    and the tier that stores the entry stamps it (``now + ttl``), so an entry read back
    from a tier carries its remaining lifetime (used to backfill a faster tier).
    ``meta`` holds a few small scalars (e.g. a status code); keep it tiny.
    """

    value: bytes
    stored_at: float
    content_type: str
    expires_at: float | None = None
    meta: Mapping[str, MetaValue] | None = None


@runtime_checkable
class CacheTier(Protocol):
    """A cache tier. Failures of a backing store are never raised: they read as misses."""

    async def get(self, key: str) -> CacheEntry | None: ...

    async def set(self, key: str, entry: CacheEntry, ttl: float) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def clear(self, pattern: str = "*") -> int: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def content_type_of(key: str) -> str:
    """The content-type segment of ``pr:{namespace}:{content_type}:{hash}``.

    Taken from the right so a namespace containing ``:`` still parses; ``"unknown"``
    when the key has no such segment.
    """
    parts = key.rsplit(":", 2)
    return parts[1] if len(parts) == 3 and parts[1] else "unknown"
