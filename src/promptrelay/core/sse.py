"""Server-sent events in Anthropic's Messages format: encode, parse, and rebuild.

`message_events(message)` turns a complete Message (as JSON-ready dict) into the event
sequence the Messages API streams, so a stored answer can be replayed to a client that
asked for `stream: true` (and the offline provider can stream). `SseParser` splits a byte
stream into events incrementally, and `MessageAssembler` folds events back into a Message,
so a streamed answer can be stored and later served as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["MessageAssembler", "SseParser", "assemble_message", "encode_event", "message_events"]

_TEXT_CHUNK = 48  # characters per replayed text delta: small enough to look like a stream


def encode_event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _chunks(text: str, size: int = _TEXT_CHUNK) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _start(index: int, block: dict[str, Any]) -> bytes:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return encode_event("content_block_start", event)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return encode_event("content_block_delta", event)


def _block_events(index: int, block: dict[str, Any]) -> Iterator[bytes]:
    kind = block.get("type")
    if kind == "text":
        yield _start(index, {**block, "text": ""})
        for piece in _chunks(block.get("text", "")):
            delta = {"type": "text_delta", "text": piece}
            yield _delta(index, delta)
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        yield _start(index, start)
        for piece in _chunks(block.get("thinking", "")):
            delta = {"type": "thinking_delta", "thinking": piece}
            yield _delta(index, delta)
        if block.get("signature"):
            delta = {"type": "signature_delta", "signature": block["signature"]}
            yield _delta(index, delta)
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        yield _start(index, start)
        partial = orjson.dumps(block.get("input", {})).decode()
        for piece in _chunks(partial):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _delta(index, delta)
    else:  # redacted_thinking and future block types arrive whole in content_block_start
        yield _start(index, block)
    yield encode_event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_events(message: dict[str, Any]) -> Iterator[bytes]:
    """The SSE event sequence that streams `message` (a complete Messages API answer)."""
    usage = message.get("usage") or {}
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": min(1, usage.get("output_tokens", 0))},
    }
    yield encode_event("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message.get("content") or []):
        yield from _block_events(index, block)
    yield encode_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason"),
                "stop_sequence": message.get("stop_sequence"),
            },
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
    )
    yield encode_event("message_stop", {"type": "message_stop"})


class SseParser:
    """Incremental SSE parser: feed bytes, get complete (event, data) pairs.

    One split per chunk finds every complete frame (a stream arrives in large chunks of
    many events); CRLF line ends are folded to LF first, also across chunk borders.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        frames = buffer.split(b"\n\n")
        self._buffer = frames.pop()
        events: list[tuple[str, bytes]] = []
        for frame in frames:
            # Anthropic's shape, inline: one known event line, one data line
            head, sep, data = frame.partition(b"\ndata: ")
            name = KNOWN_HEADS.get(head) if sep and b"\n" not in data else None
            event = (name, data) if name is not None else _frame(frame)
            if event is not None:
                events.append(event)
        return events


def _frame(frame: bytes) -> tuple[str, bytes] | None:
    if frame.startswith(b"event: "):  # Anthropic's shape: one event line, one data line
        head, sep, data = frame.partition(b"\ndata: ")
        if sep and b"\n" not in data and b"\n" not in head:
            return head[7:].decode(), data
    name, lines = "message", []
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            lines.append(line[5:].lstrip(b" "))
    return (name, b"\n".join(lines)) if lines else None


def assemble_message(raw: bytes) -> dict[str, Any] | None:
    """The Message a whole Messages stream (its raw bytes) carries, folded in one pass;
    None unless it reached `message_stop` without an `error` event. An event whose data is
    not JSON gives None too: such a stream is forwarded, never stored."""
    assembler = MessageAssembler()
    try:
        for name, data in SseParser().feed(raw):
            assembler.add(name, data)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return assembler.message if assembler.complete else None


class MessageAssembler:
    """Folds Messages API stream events back into one Message dict.

    `complete` is true only after `message_stop`; `errored` after an `error` event.
    """

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.complete = False
        self.errored = False
        self._partial_json: dict[int, list[str]] = {}
        self._pieces: dict[tuple[int, str], list[str]] = {}  # text deltas, joined once

    def add(self, name: str, data: bytes) -> None:
        if name == "error":
            self.errored = True
            return
        if name not in _FOLDED:
            return
        event = orjson.loads(data)
        kind = event.get("type", name)
        if kind == "message_start":
            self.message = dict(event["message"])
            self.message["content"] = []
        elif self.message is None:
            return
        elif kind == "content_block_start":
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            self._apply_delta(event["index"], event["delta"])
        elif kind == "content_block_stop":
            self._finish_block(event["index"])
        elif kind == "message_delta":
            self.message.update(event.get("delta", {}))
            self.message["usage"] = {**self.message.get("usage", {}), **event.get("usage", {})}
        elif kind == "message_stop":
            self._join_pieces()
            self.complete = not self.errored

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        assert self.message is not None
        block = self.message["content"][index]
        kind = delta.get("type")
        if kind == "text_delta" or kind == "thinking_delta":
            field = "text" if kind == "text_delta" else "thinking"
            pieces = self._pieces.get((index, field))
            if pieces is None:
                pieces = self._pieces[index, field] = [block.get(field, "")]
            pieces.append(delta[field])
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "input_json_delta":
            self._partial_json.setdefault(index, []).append(delta["partial_json"])
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta["citation"])

    def _join_pieces(self, index: int | None = None) -> None:
        """Write the text deltas collected so far into their blocks (one join each, where
        adding each delta to the text would copy it again per delta)."""
        assert self.message is not None
        for key in [k for k in self._pieces if index is None or k[0] == index]:
            self.message["content"][key[0]][key[1]] = "".join(self._pieces.pop(key))

    def _finish_block(self, index: int) -> None:
        assert self.message is not None
        self._join_pieces(index)
        parts = self._partial_json.pop(index, None)
        if parts is not None:
            text = "".join(parts)
            self.message["content"][index]["input"] = orjson.loads(text) if text else {}


# Claude's event names as their frames' first line: a known line needs no parsing.
KNOWN_HEADS = {
    b"event: " + name.encode(): name
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}
_FOLDED = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)
