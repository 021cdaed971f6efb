"""Signed thinking blocks of tool-calling answers, kept for the turn that answers them.

Claude needs an answer's signed thinking block back in front of its tool_use blocks when
the tool results arrive (with thinking on). OpenAI-shaped clients (LangChain, n8n) never
send it back, so the OpenAI face keeps it here, keyed by the answer's first tool call id
within the client's namespace, for RESPONSES_STORE_TTL seconds:

    keeper = ThinkingStore(cache, ttl=3600)
    await keeper.keep(namespace, message)          # an answer: thinking + tool_use blocks
    blocks = await keeper.recall(namespace, "toolu_...")   # [] when unknown or expired

Tool call ids are Claude's own (unguessable), and the namespace scopes them to one client.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from promptrelay.cache.base import CacheEntry
from promptrelay.cache.tiered import TieredCache

__all__ = ["OPENAI_THINKING", "ThinkingStore"]

OPENAI_THINKING = "openai_thinking"
_KEPT = ("thinking", "redacted_thinking")


class ThinkingStore:
    def __init__(self, cache: TieredCache, *, ttl: float) -> None:
        self._cache = cache
        self._ttl = ttl

    @staticmethod
    def _key(namespace: str, call_id: str) -> str:
        return f"pr:{namespace}:{OPENAI_THINKING}:{call_id}"

    async def keep(self, namespace: str, message: dict[str, Any], *, shared: bool = True) -> None:
        content = [block for block in message.get("content") or [] if isinstance(block, dict)]
        thinking = [block for block in content if block.get("type") in _KEPT]
        call = next((block for block in content if block.get("type") == "tool_use"), None)
        if not thinking or call is None or not isinstance(call.get("id"), str):
            return
        entry = CacheEntry(orjson.dumps(thinking), time.time(), OPENAI_THINKING)
        await self._cache.set(self._key(namespace, call["id"]), entry, self._ttl, shared=shared)

    async def recall(self, namespace: str, call_id: str) -> list[dict[str, Any]]:
        entry = await self._cache.get(self._key(namespace, call_id))
        if entry is None:
            return []
        blocks = orjson.loads(entry.value)
        return blocks if isinstance(blocks, list) else []
