"""Scripted answers of the fake upstream: tool calls, JSON answers, thinking, cache usage.

Pure functions of (request body, echo answer, knobs). `scripted_message` returns None when
no knob applies, and the fake then answers its plain echo (byte for byte as before).

- `tool_calls` [{"name", "input"}]: answered as tool_use blocks (stop_reason tool_use)
  while the last user turn holds no tool_result; a turn carrying results gets the echo.
- `json_answer` {...}: a forced tool (`tool_choice` type tool) is called with it as
  input; otherwise it is the answer's text.
- thinking on in the request: a signed thinking block comes first (see fake_strict).
- `cache_read_tokens` / `cache_creation_tokens`: added to usage as Anthropic reports them.

Streams split `input_json_delta` at awkward places (an empty first fragment, one-char
pieces, cuts right after every backslash), as real streams do.
"""

from __future__ import annotations

import hashlib
from itertools import pairwise
from typing import Any

import orjson

from promptrelay.devtools.fake_strict import signature_for

__all__ = ["json_pieces", "scripted_message", "stream_events"]


def _tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)


def _ends_with_results(body: dict[str, Any]) -> bool:
    last = body["messages"][-1]
    content = last.get("content")
    return (
        last.get("role") == "user"
        and isinstance(content, list)
        and any(isinstance(block, dict) and block.get("type") == "tool_result" for block in content)
    )


def _tool_use(answer_id: str, index: int, name: str, value: Any) -> dict[str, Any]:
    digest = hashlib.blake2b(f"{answer_id}:{index}".encode(), digest_size=8).hexdigest()
    return {"type": "tool_use", "id": f"toolu_{digest}", "name": name, "input": value}


def _content(
    body: dict[str, Any], answer_id: str, text: str, config: Any
) -> tuple[list[dict[str, Any]], str]:
    choice = body.get("tool_choice") or {}
    if config.json_answer is not None and choice.get("type") == "tool":
        return [_tool_use(answer_id, 0, str(choice["name"]), config.json_answer)], "tool_use"
    if config.json_answer is not None:
        return [{"type": "text", "text": orjson.dumps(config.json_answer).decode()}], "end_turn"
    if config.tool_calls and not _ends_with_results(body):
        calls = [
            _tool_use(answer_id, index, str(call["name"]), call.get("input", {}))
            for index, call in enumerate(config.tool_calls)
        ]
        return [{"type": "text", "text": "Calling tools."}, *calls], "tool_use"
    return [{"type": "text", "text": text}], "end_turn"


def scripted_message(
    body: dict[str, Any], answer_id: str, text: str, input_tokens: int, config: Any
) -> dict[str, Any] | None:
    thinking = (body.get("thinking") or {}).get("type") == "enabled"
    cached = config.cache_read_tokens or config.cache_creation_tokens
    if not (thinking or cached or config.tool_calls or config.json_answer is not None):
        return None
    content, stop = _content(body, answer_id, text, config)
    if thinking:
        thought = f"Considering {answer_id}."
        content.insert(
            0, {"type": "thinking", "thinking": thought, "signature": signature_for(thought)}
        )
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": _tokens(len(orjson.dumps(content))),
    }
    if cached:
        usage["cache_read_input_tokens"] = config.cache_read_tokens
        usage["cache_creation_input_tokens"] = config.cache_creation_tokens
    return {
        "id": answer_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def json_pieces(text: str) -> list[str]:
    """`text` cut into fragments that join back to it, at the awkward places."""
    cuts = {1, 2, *range(5, len(text), 7)}
    cuts |= {index + 1 for index, char in enumerate(text) if char == "\\"}
    edges = [0, *sorted(cut for cut in cuts if 0 < cut < len(text)), len(text)]
    return ["", *(text[a:b] for a, b in pairwise(edges))]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _split(text: str, chunks: int) -> list[str]:
    n = max(1, min(chunks, len(text)))
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def _block_events(index: int, block: dict[str, Any], chunks: int) -> list[bytes]:
    kind = block["type"]
    empty = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""}}.get(kind, {})
    opening = {**block, **empty} if kind != "tool_use" else {**block, "input": {}}
    start = {"type": "content_block_start", "index": index, "content_block": opening}
    events = [_event("content_block_start", start)]
    if kind == "text":
        events += [
            _delta(index, {"type": "text_delta", "text": t}) for t in _split(block["text"], chunks)
        ]
    elif kind == "thinking":
        pieces = _split(block["thinking"], 2)
        events += [_delta(index, {"type": "thinking_delta", "thinking": t}) for t in pieces]
        events.append(_delta(index, {"type": "signature_delta", "signature": block["signature"]}))
    elif kind == "tool_use":
        text = orjson.dumps(block["input"]).decode()
        events += [
            _delta(index, {"type": "input_json_delta", "partial_json": p})
            for p in json_pieces(text)
        ]
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def stream_events(message: dict[str, Any], chunks: int) -> tuple[bytes, list[bytes], bytes]:
    """(message_start, the block events, message_delta + message_stop) of `message`."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    head = _event("message_start", {"type": "message_start", "message": start})
    body: list[bytes] = []
    for index, block in enumerate(message["content"]):
        body += _block_events(index, block, chunks)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    tail = _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})
    return head, body, tail
