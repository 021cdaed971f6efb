"""The fake upstream's prompt cache, as Anthropic's behaves: pure, clock injected.

Rules:
- The cacheable prefix is everything up to and including the last block that carries
  `cache_control`, in Anthropic's order: tools, then system, then messages.
- A prefix shorter than `min_tokens` (the model's minimum cacheable length) is not
  cached: the request is billed as plain input.
- The first request with a prefix writes it (cache_creation_input_tokens, split into
  ephemeral_5m / ephemeral_1h by the breakpoint's `ttl`); a request with the same prefix
  within its TTL reads it (cache_read_input_tokens), which refreshes the TTL.
- Entries belong to one API key. `input_tokens` is what is left after the prefix.
- The breakpoints of the last request are kept (`last_breakpoints`: where, control) for
  tests to see what promptrelay sent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["CacheUsage", "FakePromptCache"]

_TTLS = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True, slots=True)
class CacheUsage:
    created: int = 0
    created_1h: int = 0
    read: int = 0

    @property
    def cached(self) -> int:
        return self.created + self.read


class FakePromptCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], float] = {}  # (key, prefix hash) -> expiry
        self.last_breakpoints: list[tuple[str, Any]] = []

    def reset(self) -> None:
        self._entries.clear()
        self.last_breakpoints = []

    def lookup(self, key: str, body: dict[str, Any], min_tokens: int) -> CacheUsage:
        self.last_breakpoints = _breakpoints(body)
        found = _prefix(body)
        if found is None:
            return CacheUsage()
        text, tokens, ttl = found
        if tokens < min_tokens:
            return CacheUsage()
        now = self._clock()
        entry = (key, hashlib.blake2b(text, digest_size=16).hexdigest())
        expires = self._entries.get(entry)
        self._entries[entry] = now + _TTLS.get(ttl, 300.0)
        if expires is not None and expires > now:
            return CacheUsage(read=tokens)
        return CacheUsage(created=tokens, created_1h=tokens if ttl == "1h" else 0)


def _prefix(body: dict[str, Any]) -> tuple[bytes, int, str] | None:
    """(the prefix's canonical bytes, its tokens by the fake's count, its TTL) or None."""
    parts: list[tuple[Any, int]] = []  # (block, characters the fake counts for it)
    for tool in body.get("tools") or ():
        parts.append((tool, len(orjson.dumps(tool))))
    system = body.get("system")
    if isinstance(system, list):
        parts.extend((block, _chars(block)) for block in system)
    elif isinstance(system, str):
        parts.append((system, len(system)))
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts.extend((block, _chars(block)) for block in content)
        elif isinstance(content, str):
            parts.append((content, len(content)))
    last = max(
        (
            i
            for i, (block, _) in enumerate(parts)
            if isinstance(block, dict) and block.get("cache_control")
        ),
        default=None,
    )
    if last is None:
        return None
    control = parts[last][0]["cache_control"]
    ttl = control.get("ttl", "5m") if isinstance(control, dict) else "5m"
    chars = sum(count for _, count in parts[: last + 1])
    text = orjson.dumps([block for block, _ in parts[: last + 1]], option=orjson.OPT_SORT_KEYS)
    return text, chars // 4, str(ttl)


def _breakpoints(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, cache_control) of every marked block: `tools.0`, `system.1`,
    `messages.0.content.2`."""
    found = []
    places = [("tools", body.get("tools")), ("system", body.get("system"))]
    for index, message in enumerate(body.get("messages") or ()):
        if isinstance(message, dict):
            places.append((f"messages.{index}.content", message.get("content")))
    for where, blocks in places:
        for index, block in enumerate(blocks if isinstance(blocks, list) else ()):
            if isinstance(block, dict) and block.get("cache_control") is not None:
                found.append((f"{where}.{index}", block["cache_control"]))
    return found


def _chars(block: Any) -> int:
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return len(block["text"])
    return len(orjson.dumps(block))
