"""The /api/generate answer, shared by the single route and every batch item.

One function builds the body a successful generate returns, so an item of
`POST /api/generate/batch` (sync or async) has exactly the shape of `POST /api/generate`.
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.core.auth import Credentials
from promptrelay.core.cache_control import DEFAULT, NO_STORE, CacheControl
from promptrelay.core.gateway import MessagesCall
from promptrelay.core.request import GenerateRequest

__all__ = ["generate_answer", "generate_call", "upstream_error"]


def generate_call(
    request: GenerateRequest,
    creds: Credentials,
    *,
    version: str,
    beta: str | None = None,
    control: CacheControl = DEFAULT,
) -> MessagesCall:
    """The Messages call a generate request makes (`"cache": false` means no-store)."""
    return MessagesCall(
        body=request.body,
        raw=orjson.dumps(request.body),
        stream=False,
        creds=creds,
        version=version,
        beta=beta,
        control=control if request.use_cache else NO_STORE,
    )


def generate_answer(
    message: dict[str, Any], *, cached: bool, offline: bool, latency_ms: float
) -> dict[str, Any]:
    """The flat JSON n8n's HTTP Request node gets (it hides headers, so `cached` is here)."""
    return {
        "id": message.get("id"),
        "text": "".join(
            block.get("text", "")
            for block in message.get("content") or []
            if isinstance(block, dict) and block.get("type") == "text"
        ),
        "model": message.get("model"),
        "usage": message.get("usage"),
        "stop_reason": message.get("stop_reason"),
        "cached": cached,
        "offline": offline,
        "latency_ms": round(latency_ms, 2),
    }


def upstream_error(status: int, body: bytes) -> dict[str, Any]:
    """A failed upstream answer as a batch item's `error`: type, message, status."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return {
            "type": str(inner.get("type", "api_error")),
            "message": inner["message"],
            "status": status,
        }
    return {"type": "api_error", "message": f"upstream answered {status}", "status": status}
