"""Anthropic wire format as the fake upstream speaks it: pure functions, no I/O.

Answers are a function of the request body alone: the same body (ignoring `stream`)
always gives the same `id`, text and usage, and different bodies give different text.
That lets cache and coalescing tests compare answers byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from promptrelay.devtools.fake_strict import InvalidRequest, check_conversation

__all__ = [
    "ERROR_TYPES",
    "MODELS",
    "STREAM_ERROR_EVENT",
    "Answer",
    "InvalidRequest",
    "answer_for",
    "count_tokens",
    "error_body",
    "error_type",
    "message_json",
    "model_json",
    "models_page",
    "stream_parts",
]

# Documented Anthropic error types by status; any other status is an `api_error`.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES: dict[str, str] = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of requests has exceeded your rate limit (fake upstream)",
    "api_error": "Internal server error",
}

# (id, display_name, created_at), newest first like the real list.
MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z"),
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
    ("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z"),
)

_ECHO_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    stream: bool
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    max_tokens: int = 0
    cache_creation: int = 0  # prompt cache (fake_cache.py): tokens written, of which 1 h
    cache_creation_1h: int = 0
    cache_read: int = 0


def input_usage(answer: Answer) -> dict[str, Any]:
    """`usage`'s input side; cache fields only when the request used the prompt cache."""
    usage: dict[str, Any] = {"input_tokens": answer.input_tokens}
    if answer.cache_creation or answer.cache_read:
        usage["cache_creation_input_tokens"] = answer.cache_creation
        usage["cache_read_input_tokens"] = answer.cache_read
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": answer.cache_creation - answer.cache_creation_1h,
            "ephemeral_1h_input_tokens": answer.cache_creation_1h,
        }
    return usage


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_body(status: int, message: str | None, request_id: str) -> bytes:
    kind = error_type(status)
    text = message or _ERROR_MESSAGES.get(kind, kind.replace("_", " "))
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}
    )


def _tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)


def _text_of(content: Any) -> str:
    """Text of a message `content` (string or list of blocks); other blocks as JSON."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            else:
                parts.append(orjson.dumps(block).decode())
    return "".join(parts)


def _input_chars(body: dict[str, Any]) -> int:
    chars = len(_text_of(body.get("system", "")))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            chars += len(_text_of(message.get("content", "")))
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return chars


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _validate_messages(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: field required (a non-empty string)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: field required (a non-empty list)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}: needs role 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(f"messages.{i}.content: must be a string or a list of blocks")


def answer_for(raw: bytes) -> Answer:
    """Validate a `POST /v1/messages` body and derive its deterministic answer."""
    body = _parse_object(raw)
    _validate_messages(body)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: field required (an integer >= 1)")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    check_conversation(body)
    messages = body["messages"]
    user_text = next(
        (_text_of(m["content"]) for m in reversed(messages) if m["role"] == "user"), ""
    )
    # `stream` does not change the answer, so it is left out of the hash.
    canonical = orjson.dumps(
        {k: v for k, v in body.items() if k != "stream"}, option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.blake2b(canonical, digest_size=12).hexdigest()
    text = f"Echo: {user_text[:_ECHO_MAX_CHARS]} [{digest[:8]}]"
    return Answer(
        id="msg_" + digest,
        model=body["model"],
        text=text,
        input_tokens=_tokens(_input_chars(body)),
        output_tokens=_tokens(len(text)),
        stream=stream,
        body=body,
        max_tokens=max_tokens,
    )


def count_tokens(raw: bytes) -> int:
    """`POST /v1/messages/count_tokens`: the same estimate `usage.input_tokens` uses."""
    body = _parse_object(raw)
    _validate_messages(body)
    return _tokens(_input_chars(body))


def message_json(answer: Answer) -> bytes:
    return orjson.dumps(
        {
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {**input_usage(answer), "output_tokens": answer.output_tokens},
        }
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_PING = _event("ping", {"type": "ping"})
_FUTURE = _event(
    "future_event_type",
    {"type": "future_event_type", "note": "unknown event types must be ignored"},
)
_BLOCK_START = _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_BLOCK_STOP = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})
STREAM_ERROR_EVENT = _event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def split_text(text: str, chunks: int) -> list[str]:
    """`chunks` non-empty pieces (fewer if the text is shorter) that join back to `text`."""
    n = max(1, min(chunks, len(text)))
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def stream_parts(
    answer: Answer, chunks: int, extra_events: bool
) -> tuple[bytes, list[bytes], bytes]:
    """The SSE stream as (events before the deltas, one event per delta, events after)."""
    start: dict[str, Any] = {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**input_usage(answer), "output_tokens": 1},
    }
    head = _event("message_start", {"type": "message_start", "message": start}) + _BLOCK_START
    if extra_events:
        head += _PING + _FUTURE
    deltas = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in split_text(answer.text, chunks)
    ]
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": answer.output_tokens},
    }
    tail = _BLOCK_STOP + _event("message_delta", message_delta) + _MESSAGE_STOP
    return head, deltas, tail


def _model(entry: tuple[str, str, str]) -> dict[str, str]:
    return {"type": "model", "id": entry[0], "display_name": entry[1], "created_at": entry[2]}


def model_json(model_id: str) -> bytes | None:
    for entry in MODELS:
        if entry[0] == model_id:
            return orjson.dumps(_model(entry))
    return None


def models_page(
    limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> bytes:
    """`GET /v1/models` with Anthropic's cursor pagination (`after_id` / `before_id`)."""
    ids = [entry[0] for entry in MODELS]
    start, stop = 0, len(MODELS)
    if after_id in ids:
        start = ids.index(after_id) + 1
    if before_id in ids:
        stop = ids.index(before_id)
        start = max(start, stop - limit) if after_id is None else start
    page = MODELS[start : min(stop, start + limit)]
    return orjson.dumps(
        {
            "data": [_model(entry) for entry in page],
            "has_more": start + len(page) < stop,
            "first_id": page[0][0] if page else None,
            "last_id": page[-1][0] if page else None,
        }
    )
