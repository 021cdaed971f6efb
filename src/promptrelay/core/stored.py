"""What a miss stores and what it sends upstream, built by the gateway (core/gateway.py).

cacheable(message)        a complete answer with something in it; never an error
stored_entry(...)         the CacheEntry of an answer: its bytes and the meta a hit
                          reports (what it saved: time, tokens, model)
UpstreamHeaders.get(...)  the request headers of a Messages call, built once per
                          upstream key, version and beta (read-only: shared by calls)
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from promptrelay.cache.base import CacheEntry
from promptrelay.cache.keys import CLAUDE_RESPONSE
from promptrelay.core.prompt_cache import input_units

__all__ = ["UpstreamHeaders", "cacheable", "stored_entry", "upstream_headers"]

_HEADER_SETS = 64  # upstream keys x versions x betas kept; past it the memo starts over


def upstream_headers(key: str, version: str, beta: str | None) -> dict[str, str]:
    headers = {"x-api-key": key, "anthropic-version": version, "content-type": "application/json"}
    if beta:
        headers["anthropic-beta"] = beta
    return headers


class UpstreamHeaders:
    """`upstream_headers` for the Messages calls, one dict per (key, version, beta):
    nothing on the way mutates them (aiohttp copies what it sends)."""

    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: dict[tuple[str, str, str | None], dict[str, str]] = {}

    def get(self, key: str, version: str, beta: str | None) -> dict[str, str]:
        memo = (key, version, beta)
        headers = self._sets.get(memo)
        if headers is None:
            if len(self._sets) >= _HEADER_SETS:
                self._sets.clear()
            headers = self._sets[memo] = upstream_headers(key, version, beta)
        return headers


def cacheable(message: dict[str, Any]) -> bool:
    """A complete answer with something in it; never an error or an empty reply."""
    if message.get("type") != "message":
        return False
    content = message.get("content")
    if not isinstance(content, list) or not content:
        return False
    return any(
        block.get("type") != "text" or block.get("text")
        for block in content
        if isinstance(block, dict)
    )


def stored_entry(
    message: dict[str, Any], encoded: bytes | None, offline: bool, started: float
) -> CacheEntry:
    """The entry of a cacheable answer (`encoded`: its bytes as they came, if at hand)."""
    usage = message.get("usage") or {}
    input_tokens = int(usage.get("input_tokens", 0))
    output_tokens = int(usage.get("output_tokens", 0))
    return CacheEntry(
        value=encoded if encoded is not None else orjson.dumps(message),
        stored_at=time.time(),
        content_type=CLAUDE_RESPONSE,
        meta={
            "upstream_ms": round((time.perf_counter() - started) * 1000, 2),
            "tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "input_units": input_units(usage),
            "output_tokens": output_tokens,
            "model": str(message.get("model", "")),
            "offline": int(offline),
        },
    )
