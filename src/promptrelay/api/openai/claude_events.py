"""What both OpenAI stream encoders read alike from Claude's closing stream events."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["error_of", "fold_message_delta"]


def fold_message_delta(data: bytes, stop: Any, usage: dict[str, Any]) -> Any:
    """Fold a `message_delta` into `usage` (in place); return the stop reason it carries,
    else `stop` as it was."""
    event = orjson.loads(data)
    usage.update(event.get("usage") or {})
    return (event.get("delta") or {}).get("stop_reason", stop)


def error_of(data: bytes) -> tuple[str, str]:
    """An `error` event's type and message."""
    error = orjson.loads(data).get("error") or {}
    return str(error.get("type", "api_error")), str(error.get("message"))
