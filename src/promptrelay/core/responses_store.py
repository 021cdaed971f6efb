"""Stored /v1/responses answers: a record per response id, in the tiered cache.

    store = ResponseStore(cache, ttl=settings.responses_store_ttl)
    response_id = store.new_id()                       # unguessable: resp_ + 192 random bits
    await store.save(namespace, response_id, record, shared=True)
    record = await store.load(namespace, response_id)  # None: unknown, expired, or another
                                                       # namespace's id
    message = await store.answer(record)               # the Claude answer it references

A record holds the conversation sent (Claude messages), what the response echoes of its
request, and the cache key of the answer, not a second copy of it; only an answer that
was not cached (Cache-Control: no-store) is kept inside the record. A response is readable
while both its record and its answer live. Records sit in the tiered cache under the
client's namespace, so every instance sees them through Redis; without Redis they live in
this process only (lost on restart or a memory-guard trim).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from promptrelay.cache.base import CacheEntry
from promptrelay.cache.tiered import TieredCache
from promptrelay.core.request import json_object_or_none

__all__ = ["OPENAI_RESPONSE", "ResponseStore"]

OPENAI_RESPONSE = "openai_response"


class ResponseStore:
    def __init__(
        self,
        cache: TieredCache,
        *,
        ttl: float,
        token: Callable[[int], str] = secrets.token_hex,
    ) -> None:
        self._cache = cache
        self._ttl = ttl
        self._token = token

    def new_id(self) -> str:
        return "resp_" + self._token(24)

    @staticmethod
    def _key(namespace: str, response_id: str) -> str:
        return f"pr:{namespace}:{OPENAI_RESPONSE}:{response_id}"

    async def save(
        self, namespace: str, response_id: str, record: dict[str, Any], *, shared: bool
    ) -> None:
        entry = CacheEntry(orjson.dumps(record), time.time(), OPENAI_RESPONSE)
        await self._cache.set(self._key(namespace, response_id), entry, self._ttl, shared=shared)

    async def load(self, namespace: str, response_id: str) -> dict[str, Any] | None:
        if not response_id.startswith("resp_") or len(response_id) > 100:
            return None
        entry = await self._cache.get(self._key(namespace, response_id))
        return None if entry is None else json_object_or_none(entry.value)

    async def answer(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The Claude message a record references; None once it has left the cache."""
        kept = record.get("answer")
        if isinstance(kept, dict):
            return kept
        key = record.get("answer_key")
        entry = await self._cache.get(key) if isinstance(key, str) else None
        return None if entry is None else json_object_or_none(entry.value)
