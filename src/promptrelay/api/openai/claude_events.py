"""What both OpenAI stream encoders read alike from Claude's stream: its frames, and
its closing events."""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.core.sse import KNOWN_HEADS, SseParser

__all__ = ["ClaudeFrames", "error_of", "fold_message_delta"]


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


class ClaudeFrames:
    """SseParser's (event, data) pairs, cheaper for the stream Claude sends.

    Anthropic writes every event as `event: <name>\ndata: <json>\n\n`. A frame whose
    first line is a known `event:` line costs one partition and one dict lookup (another
    `event: <name>` line, one check more); one check per read (no line break in any of
    those data) proves they had no other line. Every other frame, and a read that fails
    the check, goes through SseParser, so the pairs are the same either way.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        frames = buffer.split(b"\n\n")
        self._buffer = frames.pop()
        events: list[tuple[str, bytes]] = []
        datas: list[bytes] = []
        heads = KNOWN_HEADS
        for frame in frames:
            head, found, data = frame.partition(b"\ndata: ")
            name = heads.get(head) if found else None
            if name is None and found and head.startswith(b"event: ") and b"\n" not in head:
                name = head[7:].decode()  # an event Claude may add: SseParser's own rule
            if name is None:
                events += SseParser().feed(frame + b"\n\n")
            else:
                events.append((name, data))
                datas.append(data)
        if b"\n" in b"".join(datas):  # a data line more in some frame: the general rules
            return SseParser().feed(buffer[: len(buffer) - len(self._buffer)])
        return events
