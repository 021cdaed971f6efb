"""OpenAI's error envelope, for both OpenAI faces.

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

The HTTP status is kept from the error it stands for (the openai SDKs pick their exception
class and retry decision by status, `retry-after` and `x-should-retry`).
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.asgi import JSON_CONTENT, Send, send_response
from promptrelay.core.request import json_object_or_none
from promptrelay.errors import GatewayError, InvalidRequest

__all__ = ["FieldError", "openai_error", "send_openai_error", "translate_error_body"]

# Anthropic's error types by the name OpenAI's clients know them.
_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "overloaded_error": "server_error",
    "timeout_error": "server_error",
    "api_error": "server_error",
}


class FieldError(InvalidRequest):
    """A 400 about one request field; `param` names it the way the client spelt it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def openai_error(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(kind, kind),
            "param": param,
            "code": code if code is not None else kind,
        }
    }


def _body_of(error: GatewayError) -> bytes:
    param = error.param if isinstance(error, FieldError) else None
    return orjson.dumps(openai_error(error.message, error.type, param=param))


async def send_openai_error(
    send: Send, error: GatewayError, extra: list[tuple[bytes, bytes]]
) -> None:
    """Our own error (bad input, a key, an upstream give-up) in OpenAI's shape."""
    headers = [JSON_CONTENT, *extra]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    await send_response(send, error.status, headers, _body_of(error))


def translate_error_body(status: int, body: bytes) -> bytes:
    """An upstream (Anthropic-shaped) error answer in OpenAI's shape, same meaning."""
    parsed = json_object_or_none(body)
    inner = parsed.get("error") if parsed is not None else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        kind = str(inner.get("type") or "api_error")
        return orjson.dumps(openai_error(inner["message"], kind))
    return orjson.dumps(openai_error(f"upstream answered {status}", "api_error"))


def error_event(kind: str, message: str) -> bytes:
    """A mid-stream failure as the openai SDKs read one: a data line with `error`."""
    return b"data: " + orjson.dumps(openai_error(message, kind)) + b"\n\n"
