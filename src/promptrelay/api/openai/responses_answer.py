"""A Claude message as an OpenAI `response` object: pure.

Output items, one per Claude block in its order: thinking -> a `reasoning` item (its
text as a summary), text -> a `message` item with one `output_text` part, tool_use -> a
`function_call` item whose `call_id` is the tool_use id. The JSON-answer tool's input is
`output_text`. `status` is `incomplete` (reason max_output_tokens) when Claude ran out of
tokens, else `completed`.
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.openai.content import JSON_TOOL

__all__ = [
    "ResponseShape",
    "call_item",
    "item_id",
    "message_item",
    "output_items",
    "reasoning_item",
    "response_object",
    "responses_usage",
    "usage_bytes",
]


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cached = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + written
    completion = int(usage.get("output_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def usage_bytes(usage: dict[str, Any]) -> bytes:
    """`responses_usage(usage)` encoded."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached
    prompt += int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return _USAGE % (prompt, cached, completion, prompt + completion)


_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,'
    b'"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}'
)


def _suffix(message_id: Any) -> str:
    return str(message_id or "promptrelay").removeprefix("msg_")


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


def call_item(block: dict[str, Any], arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id(None, 0, block),
        "call_id": block.get("id"),
        "name": block.get("name"),
        "arguments": arguments,
        "status": status,
    }


def item_id(message_id: Any, index: int, block: dict[str, Any]) -> str:
    """Output item ids, the same in a JSON answer and in its stream."""
    if block.get("type") == "tool_use" and not block.get("name") == JSON_TOOL:
        return "fc_" + str(block.get("id", "")).removeprefix("toolu_")
    prefix = "rs" if block.get("type") == "thinking" else "msg"
    return f"{prefix}_{_suffix(message_id)}_{index}"


def reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": thinking}] if thinking else []
    return {"type": "reasoning", "id": item_id, "summary": summary}


def output_items(message: dict[str, Any], json_answer: bool) -> list[dict[str, Any]]:
    """One item per Claude block: reasoning, message (text) or function_call."""
    items: list[dict[str, Any]] = []
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in ("thinking", "text", "tool_use"):
            continue
        at = item_id(message.get("id"), index, block)
        if kind == "thinking":
            items.append(reasoning_item(at, str(block.get("thinking", ""))))
        elif kind == "text":
            items.append(message_item(at, str(block.get("text", ""))))
        elif json_answer and block.get("name") == JSON_TOOL:
            items.append(message_item(at, orjson.dumps(block.get("input") or {}).decode()))
        else:
            items.append(call_item(block, orjson.dumps(block.get("input") or {}).decode()))
    return items


# what a response echoes of a body that sets none of these fields (those set below aside),
# in the order ResponseShape writes them
_PLAIN: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "model": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": None,
    "store": True,
    "temperature": None,
    "text": None,
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "metadata": {},
    "user": None,
}
_ECHOED = frozenset(_PLAIN) - {"max_output_tokens", "model", "store", "truncation"}


class ResponseShape:
    """What a response object echoes of its request (identical for JSON and streams)."""

    __slots__ = ("_encoded", "fields")

    def __init__(self, body: dict[str, Any], model: str, store: bool) -> None:
        self._encoded = b""
        if _ECHOED.isdisjoint(body):  # the common body: every echoed field its default
            self._plain(body.get("max_output_tokens"), model, body.get("store", True) and store)
            return
        text = body.get("text") if isinstance(body.get("text"), dict) else {}
        fmt = (text or {}).get("format") or {"type": "text"}
        self.fields: dict[str, Any] = {
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "store": body.get("store", True) and store,
            "temperature": body.get("temperature"),
            "text": {"format": fmt},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
            "user": body.get("user"),
        }

    def _plain(self, max_output_tokens: Any, model: str, store: Any) -> None:
        """The fields (and their encoding) of a body that echoes none, made once per
        (max_output_tokens, model, store) and shared: nothing writes to them."""
        key = (max_output_tokens, model, store)
        known = _PLAIN_SHAPES.get(key)
        if known is None:
            fields = {
                **_PLAIN,
                "max_output_tokens": max_output_tokens,
                "model": model,
                "reasoning": {"effort": None, "summary": None},
                "store": store,
                "text": {"format": {"type": "text"}},
            }
            if len(_PLAIN_SHAPES) >= _PLAIN_SHAPES_KEPT:
                _PLAIN_SHAPES.clear()
            known = _PLAIN_SHAPES[key] = (fields, orjson.dumps(fields)[1:-1])
        self.fields, self._encoded = known

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ResponseShape:
        """A shape read back from a stored record."""
        shape = cls.__new__(cls)
        shape.fields, shape._encoded = dict(fields), b""
        return shape

    def response(
        self, response_id: str, created_at: int, status: str, output: list[Any], usage: Any
    ) -> dict[str, Any]:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            **self.fields,
            "output": output,
            "usage": usage,
        }

    def encoded(
        self, response_id: bytes, created_at: int, status: bytes, output: bytes, usage: bytes
    ) -> bytes:
        """`response()` encoded, from its encoded id (a JSON string), output items (joined
        by commas) and usage."""
        if not self._encoded:
            self._encoded = orjson.dumps(self.fields)[1:-1]
        incomplete = _INCOMPLETE if status == b"incomplete" else b"null"
        fields = (response_id, created_at, status, incomplete, self._encoded, output, usage)
        return _RESPONSE % fields


_RESPONSE = (
    b'{"id":%s,"object":"response","created_at":%d,"status":"%s","error":null,'
    b'"incomplete_details":%s,%s,"output":[%s],"usage":%s}'
)
_INCOMPLETE = b'{"reason":"max_output_tokens"}'
_PLAIN_SHAPES: dict[tuple[Any, str, Any], tuple[dict[str, Any], bytes]] = {}
_PLAIN_SHAPES_KEPT = 64


def response_object(
    message: dict[str, Any],
    shape: ResponseShape,
    *,
    response_id: str,
    created_at: int,
    json_answer: bool,
) -> dict[str, Any]:
    status = "incomplete" if message.get("stop_reason") == "max_tokens" else "completed"
    output = output_items(message, json_answer)
    usage = responses_usage(message.get("usage") or {})
    return shape.response(response_id, created_at, status, output, usage)
