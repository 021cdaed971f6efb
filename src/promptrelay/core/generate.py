"""/api/generate below HTTP, shared by the single route and every batch item.

    generate_ask(raw, creds, ...)   parse the generate body into the pipeline's Ask
    generate_answer(...)            the flat JSON a successful generate returns
    upstream_error(...)             a failed upstream answer as a batch item's error

so an item of `POST /api/generate/batch` (sync or async) behaves and answers exactly like
`POST /api/generate`: the same Ask goes through the same `Pipeline.prepare`.
"""

from __future__ import annotations

from typing import Any

from promptrelay.core.auth import Credentials
from promptrelay.core.cache_control import DEFAULT, CacheControl
from promptrelay.core.pipeline import Ask
from promptrelay.core.request import json_object_or_none, parse_generate
from promptrelay.templates.render import Rendered

__all__ = ["generate_answer", "generate_ask", "upstream_error"]


def generate_ask(
    raw: bytes,
    creds: Credentials,
    *,
    version: str | None = None,
    beta: str | None = None,
    control: CacheControl = DEFAULT,
) -> Ask:
    """Raises InvalidRequest (bad JSON or fields)."""
    request = parse_generate(raw)
    return Ask(
        creds,
        request.body,
        version=version,
        beta=beta,
        control=control,
        use_cache=request.use_cache,
        template=request.template,
    )


def generate_answer(
    message: dict[str, Any],
    *,
    cached: bool,
    offline: bool,
    latency_ms: float,
    template: Rendered | None = None,
) -> dict[str, Any]:
    """The flat JSON n8n's HTTP Request node gets (it hides headers, so `cached` is here)."""
    answer = {
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
    if template is not None:
        answer["template"] = template.name
        answer["template_version"] = template.version
    return answer


def upstream_error(status: int, body: bytes) -> dict[str, Any]:
    """A failed upstream answer as a batch item's `error`: type, message, status."""
    parsed = json_object_or_none(body)
    inner = parsed.get("error") if parsed is not None else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return {
            "type": str(inner.get("type", "api_error")),
            "message": inner["message"],
            "status": status,
        }
    return {"type": "api_error", "message": f"upstream answered {status}", "status": status}
