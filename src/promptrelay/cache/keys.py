"""Cache keys: a canonical hash of everything that can change an answer.

The key covers the whole request body except `stream` (a stored answer can be replayed
either way) and `metadata` (per-caller bookkeeping), so a field added to the API later can
never cause a wrong HIT. Around the body: `anthropic-version`, `anthropic-beta`, the
resolved model, the upstream base URL, the provider (offline answers never mix with live
ones) and the tenant namespace. Canonical: object keys sorted, no whitespace, so the JSON
spelling of a request does not change its key; and a message `content` or a `system` that is
one plain text block (`[{"type": "text", "text": s}]`, nothing else in it) counts as the
string `s`, which Anthropic treats as the same request. That lets every face (the Messages
API, /api/generate, the OpenAI faces) share one entry for one Claude call.

Key shape, for every content type: `pr:{namespace}:{content_type}:{name}` (`entry_key`);
a Messages answer's name is the hex digest above (`cache_key`), a template's
`{name}@{version}`, the providers file marker's a digest of its path. Admin clears glob
over the same shape (`key_pattern`). This module is the only place that spells it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

__all__ = ["CLAUDE_RESPONSE", "KeyParts", "RawMemo", "cache_key", "entry_key", "key_pattern"]

_V = TypeVar("_V")
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


def _plain_text(value: Any) -> Any:
    """`s` for `[{"type": "text", "text": s}]`; anything else unchanged."""
    if type(value) is list and len(value) == 1:
        block = value[0]
        if type(block) is dict and len(block) == 2 and block.get("type") == "text":
            text = block.get("text")
            if type(text) is str:
                return text
    return value


def _plain_messages(messages: Any) -> Any:
    """`messages` with one-text-block contents as strings; the same list if none is."""
    if type(messages) is not list:
        return messages
    out: list[Any] | None = None
    for index, message in enumerate(messages):
        if type(message) is not dict:
            continue
        content = message.get("content")
        if type(content) is not list or len(content) != 1:
            continue  # the common case (a string) costs these two checks
        plain = _plain_text(content)
        if plain is not content:
            if out is None:
                out = list(messages)
            out[index] = {**message, "content": plain}
    return messages if out is None else out


def _canonical(body: Mapping[str, Any]) -> bytes:
    kept = {name: value for name, value in body.items() if name not in _IGNORED}
    if "system" in kept:
        kept["system"] = _plain_text(kept["system"])
    if "messages" in kept:
        kept["messages"] = _plain_messages(kept["messages"])
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def cache_key(body: Mapping[str, Any], parts: KeyParts, content_type: str = CLAUDE_RESPONSE) -> str:
    digest = _prefixed(parts).copy()
    digest.update(_canonical(body))
    return entry_key(parts.namespace, content_type, digest.hexdigest())


# The hash state after the parts, per KeyParts: a key then costs one copy and the body's
# update, not eight updates. Few parts recur (namespaces x versions x betas x models).
_PREFIXES: dict[KeyParts, Any] = {}
_PREFIXES_MAX = 256


def _prefixed(parts: KeyParts) -> Any:
    state = _PREFIXES.get(parts)
    if state is None:
        state = hashlib.blake2b(digest_size=20)
        for field in (parts.upstream, parts.version, parts.beta or "", parts.model):
            state.update(field.encode())
            state.update(b"\x00")
        if len(_PREFIXES) >= _PREFIXES_MAX:
            _PREFIXES.clear()
        _PREFIXES[parts] = state
    return state


class RawMemo(Generic[_V]):
    """What was derived from a request's raw bytes (its cache key, its parsed body), for
    the next identical request: a hit that repeats a body skips the parse, the canonical
    JSON and the hash. `memo` is a tuple whose first item is the raw body; the value must
    be a function of the whole tuple. Bounded: bodies over `max_raw` bytes are not kept,
    and past `entries` the oldest goes (so at most entries x max_raw bytes of bodies)."""

    __slots__ = ("_entries", "_max_raw", "_values")

    def __init__(self, entries: int = 256, max_raw: int = 4096) -> None:
        self._values: dict[tuple[Any, ...], _V] = {}
        self._entries = entries
        self._max_raw = max_raw

    def __len__(self) -> int:
        return len(self._values)

    def get(self, memo: tuple[Any, ...]) -> _V | None:
        return self._values.get(memo)

    def put(self, memo: tuple[Any, ...], value: _V) -> None:
        if len(memo[0]) > self._max_raw:
            return
        values = self._values
        if len(values) >= self._entries:
            del values[next(iter(values))]  # the oldest: dicts keep insertion order
        values[memo] = value
