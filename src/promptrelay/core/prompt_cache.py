"""Anthropic prompt-cache breakpoints (`cache_control`): counted, added, never over four.

    count_breakpoints(body)          the breakpoints a Messages body carries already
    cache_control(ttl)               {"type": "ephemeral"} (+ "ttl": "1h")
    auto_breakpoint(body, model)     PROMPT_CACHE_AUTO: the body with a breakpoint after
                                     its system prompt, or the very same body when none
                                     belongs there
    min_cacheable_tokens(model)      Anthropic's minimum cacheable prefix for a model
    prompt_cache_used(model, usage)  an answer's cache tokens, as an event
    input_units(usage)               its input in input-price tokens (cache multipliers)

Anthropic's rules (platform.claude.com prompt-caching): at most four breakpoints in one
request, in the order tools, system, messages; a longer TTL must come before a shorter
one; a prefix below the model's minimum is silently not cached (no error, no charge).
The 1 h TTL is a `ttl` field of `cache_control` in the generally available API (the
SDK's non-beta `CacheControlEphemeralParam` has it); no beta header is needed.
"""

from __future__ import annotations

from typing import Any

from promptrelay.core.events import PromptCacheUsed

__all__ = [
    "MAX_BREAKPOINTS",
    "READ",
    "WRITE_1H",
    "WRITE_5M",
    "auto_breakpoint",
    "cache_control",
    "count_breakpoints",
    "input_units",
    "min_cacheable_tokens",
    "prompt_cache_used",
]

MAX_BREAKPOINTS = 4
# Anthropic's prices for cached input, as multiples of the model's input price.
WRITE_5M = 1.25
WRITE_1H = 2.0
READ = 0.1
# Most specific prefix first; any other model: 1,024 tokens (Sonnet 3.7 to 4.6, Opus 4/4.1).
_MINIMUM_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
_DEFAULT_MINIMUM = 1024


def min_cacheable_tokens(model: str) -> int:
    for prefix, tokens in _MINIMUM_TOKENS:
        if model.startswith(prefix):
            return tokens
    return _DEFAULT_MINIMUM


def cache_control(ttl: str | None) -> dict[str, str]:
    """The breakpoint for a TTL; 5 minutes is Anthropic's default and is left implicit."""
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def count_breakpoints(body: dict[str, Any]) -> int:
    """Blocks with `cache_control` in tools, system and message content."""
    count = sum(_marked(tool) for tool in _list(body.get("tools")))
    count += sum(_marked(block) for block in _list(body.get("system")))
    for message in _list(body.get("messages")):
        if isinstance(message, dict):
            count += sum(_marked(block) for block in _list(message.get("content")))
    return count


def auto_breakpoint(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A copy of `body` whose system prompt ends in a 5-minute breakpoint, when the system
    prompt is longer than the model's minimum (characters / 4, the governor's estimate),
    does not end in one already, and the request has fewer than four; else `body`."""
    system = body.get("system")
    if isinstance(system, str):
        blocks: list[Any] = [{"type": "text", "text": system}]
    elif isinstance(system, list) and system and isinstance(system[-1], dict):
        blocks = list(system)
    else:
        return body
    last = blocks[-1]
    if last.get("cache_control") is not None or last.get("type") != "text":
        return body
    chars = sum(len(b["text"]) for b in blocks if isinstance(b, dict) and _text(b))
    if chars // 4 <= min_cacheable_tokens(model):
        return body
    if count_breakpoints(body) >= MAX_BREAKPOINTS:
        return body
    blocks[-1] = {**last, "cache_control": cache_control(None)}
    return {**body, "system": blocks}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and block.get("cache_control") is not None


def _text(block: dict[str, Any]) -> bool:
    return isinstance(block.get("text"), str)


def prompt_cache_used(model: str, usage: dict[str, Any]) -> PromptCacheUsed:
    split = usage.get("cache_creation")
    one_hour = split.get("ephemeral_1h_input_tokens") if isinstance(split, dict) else 0
    return PromptCacheUsed(
        model,
        _count(usage.get("cache_read_input_tokens")),
        _count(usage.get("cache_creation_input_tokens")),
        _count(one_hour),
    )


def input_units(usage: dict[str, Any]) -> int:
    """An answer's input in input-price tokens: fresh input, plus its prompt-cache reads
    and writes with Anthropic's multipliers (a hit saves all of that)."""
    if "cache_read_input_tokens" not in usage and "cache_creation_input_tokens" not in usage:
        return _count(usage.get("input_tokens"))
    used = prompt_cache_used("", usage)
    five_min = max(0, used.created - used.created_1h)
    cached = WRITE_5M * five_min + WRITE_1H * used.created_1h + READ * used.read
    return _count(usage.get("input_tokens")) + round(cached)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
