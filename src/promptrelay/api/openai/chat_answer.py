"""A Claude message as an OpenAI `chat.completion`, and usage both ways: pure.

finish_reason: end_turn / stop_sequence / pause_turn -> stop, max_tokens -> length,
tool_use -> tool_calls (stop when the only tool is the JSON answer), refusal ->
content_filter. prompt_tokens counts every input token, cached ones included;
`prompt_tokens_details.cached_tokens` is the part read from Claude's prompt cache.
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.openai.content import JSON_TOOL

__all__ = ["chat_completion", "completion_id", "finish_reason", "openai_usage"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any, json_answer: bool = False) -> str:
    if stop_reason == "tool_use" and json_answer:
        return "stop"
    return _FINISH.get(str(stop_reason), "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + created
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def completion_id(message_id: Any) -> str:
    text = str(message_id or "")
    return "chatcmpl-" + (text.removeprefix("msg_") or "promptrelay")


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def chat_completion(message: dict[str, Any], *, created: int, json_answer: bool) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use" and json_answer and block.get("name") == JSON_TOOL:
            texts.append(_arguments(block.get("input")))
        elif kind == "tool_use":
            function = {"name": block.get("name"), "arguments": _arguments(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    stop = message.get("stop_reason")
    if json_answer and not calls:
        stop = "end_turn" if stop == "tool_use" else stop
    return {
        "id": completion_id(message.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model", ""),
        "choices": [
            {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(stop)}
        ],
        "usage": openai_usage(message.get("usage") or {}),
        "system_fingerprint": None,
    }
