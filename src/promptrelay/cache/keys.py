"""Cache keys: a canonical hash of everything that can change an answer.

The key covers the whole request body except `stream` (a stored answer can be replayed
either way) and `metadata` (per-caller bookkeeping), so a field added to the API later can
never cause a wrong HIT. Around the body: `anthropic-version`, `anthropic-beta`, the
resolved model, the upstream base URL, the provider (offline answers never mix with live
ones) and the tenant namespace. Canonical: object keys sorted, no whitespace, so the JSON
spelling of a request does not change its key.

Key shape, for every content type: `pr:{namespace}:{content_type}:{name}` (`entry_key`);
a Messages answer's name is the hex digest above (`cache_key`), a template's
`{name}@{version}`, the providers file marker's a digest of its path. Admin clears glob
over the same shape (`key_pattern`). This module is the only place that spells it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["CLAUDE_RESPONSE", "KeyParts", "cache_key", "entry_key", "key_pattern"]

_IGNORED = frozenset({"stream", "metadata"})
_PREFIX = "pr"
CLAUDE_RESPONSE = "claude_response"


def entry_key(namespace: str, content_type: str, name: str) -> str:
    """The key of one entry (or, with glob characters in `name`, a pattern in that
    namespace and content type)."""
    return f"{_PREFIX}:{namespace}:{content_type}:{name}"


def key_pattern(namespace: str, content_type: str, glob: str) -> str:
    """A glob for `clear`, each segment a glob itself (`*` matches every namespace)."""
    return entry_key(namespace, content_type, glob)


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
    return entry_key(parts.namespace, content_type, digest.hexdigest())
