"""The offline provider: answers in-process when no Anthropic key exists anywhere.

It lets `make run` serve something useful out of the box. Every answer says plainly that
it is offline (text prefix, id prefix, `x-promptrelay-provider: offline` header) and is
deterministic: the same request body gives the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from promptrelay.core.sse import message_events
from promptrelay.errors import OfflineUnsupported
from promptrelay.upstream.client import UpstreamResponse

__all__ = ["OFFLINE_HEADER", "OfflineProvider"]

OFFLINE_HEADER = (b"x-promptrelay-provider", b"offline")
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_MODELS = ("claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-3-haiku-20240307")
HOW_TO_GO_LIVE = (
    "promptrelay is offline: no ANTHROPIC_API_KEY is set and the client sent no key. "
    "Set ANTHROPIC_API_KEY (or send your own key as x-api-key) to get Claude's answers."
)


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        ]
        return " ".join(texts)
    return ""


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class OfflineProvider:
    def message(self, body: dict[str, Any], raw: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(raw).hexdigest()
        prompt = _last_user_text(body)
        text = f"[offline] {HOW_TO_GO_LIVE} You said: {prompt[:500]}"
        words = text.split(" ")
        max_tokens = int(body.get("max_tokens", 1024))
        truncated = len(words) > max_tokens
        text = " ".join(words[:max_tokens])
        return {
            "id": f"msg_offline_{digest[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": _estimate_tokens(orjson.dumps(body.get("messages")).decode()),
                "output_tokens": _estimate_tokens(text),
            },
        }

    def messages(self, body: dict[str, Any], raw: bytes, *, stream: bool) -> UpstreamResponse:
        message = self.message(body, raw)
        if stream:
            return UpstreamResponse(
                status=200,
                headers=[_SSE, OFFLINE_HEADER],
                content_type=_SSE[1].decode(),
                chunks=_replay(message),
            )
        return UpstreamResponse(
            status=200, headers=[_JSON, OFFLINE_HEADER], body=orjson.dumps(message)
        )

    def other(self, method: str, path: str, raw: bytes) -> UpstreamResponse:
        """The few other /v1 routes that make sense offline; the rest say why not."""
        if method == "GET" and path == "/v1/models":
            data = [_model(name) for name in _MODELS]
            page = {"data": data, "has_more": False, "first_id": _MODELS[0], "last_id": _MODELS[-1]}
            return UpstreamResponse(200, [_JSON, OFFLINE_HEADER], orjson.dumps(page))
        if method == "GET" and path.startswith("/v1/models/"):
            return UpstreamResponse(
                200, [_JSON, OFFLINE_HEADER], orjson.dumps(_model(path.rsplit("/", 1)[1]))
            )
        if method == "POST" and path == "/v1/messages/count_tokens":
            count = _estimate_tokens(raw.decode("utf-8", "replace"))
            return UpstreamResponse(
                200, [_JSON, OFFLINE_HEADER], orjson.dumps({"input_tokens": count})
            )
        raise OfflineUnsupported(f"{method} {path} needs the real API. {HOW_TO_GO_LIVE}")


def _model(name: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": name,
        "display_name": f"{name} (offline)",
        "created_at": "2025-01-01T00:00:00Z",
    }


async def _replay(message: dict[str, Any]) -> AsyncIterator[bytes]:
    for event in message_events(message):
        yield event
