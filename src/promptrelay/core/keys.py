"""Cache keys: a canonical hash of everything that can change an answer.

The key covers the whole request body except `stream` (a stored answer can be replayed
either way) and `metadata` (per-caller bookkeeping), so a field added to the API later can
never cause a wrong HIT. Around the body: `anthropic-version`, `anthropic-beta`, the
resolved model, the upstream base URL, the provider (offline answers never mix with live
ones) and the tenant namespace. Canonical: object keys sorted, no whitespace, so the JSON
spelling of a request does not change its key.

Key shape: `pr:{namespace}:{content_type}:{hex digest}`; admin clears glob over it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["KeyParts", "cache_key"]

_IGNORED = frozenset({"stream", "metadata"})
CLAUDE_RESPONSE = "claude_response"


@dataclass(frozen=True, slots=True)
class KeyParts:
    """Everything outside the body that selects an answer."""

    namespace: str
    upstream: str  # base URL, or "offline"
    version: str
    beta: str | None
    model: str


def _canonical(body: Mapping[str, Any]) -> bytes:
    kept = {name: value for name, value in body.items() if name not in _IGNORED}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def cache_key(body: Mapping[str, Any], parts: KeyParts, content_type: str = CLAUDE_RESPONSE) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for field in (parts.upstream, parts.version, parts.beta or "", parts.model):
        digest.update(field.encode())
        digest.update(b"\x00")
    digest.update(_canonical(body))
    return f"pr:{parts.namespace}:{content_type}:{digest.hexdigest()}"
