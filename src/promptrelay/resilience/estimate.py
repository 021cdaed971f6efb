"""What a Messages request will take from the upstream's buckets, estimated before sending.

    input tokens   characters / 4 over the system prompt, every message's text, tool
                   definitions and tool inputs/results (their JSON); an image by
                   Anthropic's documented rule, width x height / 750 after scaling its
                   long edge to at most 1568 px (PNG and GIF sizes are read from their
                   header; any other image counts as the largest, 1,600 tokens)
    output tokens  max_tokens: Anthropic reserves it against the output limit up front
    requests       1

The estimate over-counts a cached prefix (cache reads do not count against the input
limit): the answer's headers correct the bucket as soon as it arrives, so an over-count
only costs a little waiting, never a 429.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from promptrelay.resilience.ratelimit import Cost

__all__ = ["estimate_cost", "image_tokens"]

_MAX_IMAGE_TOKENS = 1600
_MAX_EDGE = 1568


def estimate_cost(body: dict[str, Any]) -> Cost:
    system = body.get("system")
    chars = len(system) if type(system) is str else _chars(system)
    images = 0
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            content = message.get("content")
            if type(content) is str:  # the common case, without a call
                chars += len(content)
                continue
            text, image = _content(content)
            chars += text
            images += image
    tools = body.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    max_tokens = body.get("max_tokens")
    output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    return Cost(1.0, float(max(1, (chars + 3) // 4) + images), float(output))


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return _content(value)[0]
    return 0


def _content(content: Any) -> tuple[int, int]:
    """(characters, image tokens) of a message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if not isinstance(content, list):
        return 0, 0
    for block in content:
        if not isinstance(block, dict):
            continue
        text = block.get("text")
        if isinstance(text, str):
            chars += len(text)
        elif block.get("type") == "image":
            images += image_tokens(block.get("source"))
        else:
            chars += len(orjson.dumps(block))
    return chars, images


def image_tokens(source: Any) -> int:
    """Anthropic's rule for one image: (width x height) / 750, long edge at most 1568."""
    size = _size(source)
    if size is None:
        return _MAX_IMAGE_TOKENS
    longest = max(size)
    scale = min(1.0, _MAX_EDGE / longest) if longest > 0 else 1.0
    pixels = size[0] * scale * size[1] * scale
    return min(_MAX_IMAGE_TOKENS, max(1, round(pixels / 750)))


def _size(source: Any) -> tuple[int, int] | None:
    if not isinstance(source, dict) or source.get("type") != "base64":
        return None
    data = source.get("data")
    if not isinstance(data, str):
        return None
    try:
        head = base64.b64decode(data[:44], validate=False)
    except (binascii.Error, ValueError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:4] == b"GIF8" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return None
