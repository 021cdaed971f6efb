"""Claude's Messages stream events as `chat.completion.chunk` SSE: a pure state machine.

    chunks = ChatChunks(created=..., include_usage=..., json_answer=...)
    out = chunks.feed(parser.feed(upstream_bytes))   # bytes to write, possibly none
    # (chunks.event(name, data) translates one event)

Sequence written: a first chunk with `role: assistant`; text deltas as `content`;
thinking as `reasoning_content`; each tool_use as a tool call with its own `index`,
whose first delta carries `id`, `type` and `function.name` (and empty arguments) and
whose later deltas carry argument fragments in upstream order; on `message_stop` a chunk
with `finish_reason`, then the usage chunk when asked, then `data: [DONE]`. An upstream
`error` event becomes OpenAI's error data line, and nothing follows it.
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.openai.chat_answer import completion_id, finish_reason, openai_usage
from promptrelay.api.openai.claude_events import error_of, fold_message_delta
from promptrelay.api.openai.content import JSON_TOOL
from promptrelay.api.openai.errors import error_event

__all__ = ["DONE", "ChatChunks"]

DONE = b"data: [DONE]\n\n"
_TEXT = b'{"content":'  # a text delta, the stream's commonest chunk: built from fragments
# every chunk's bytes up to its delta: its id, created and model
_HEAD = (
    b'{"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,'
    b'"system_fingerprint":null,"choices":[{"index":0,"delta":'
)
# the events `event` does anything with, besides content_block_delta
_WRITING = frozenset(
    {"message_start", "content_block_start", "message_delta", "message_stop", "error"}
)


class ChatChunks:
    __slots__ = (
        "_blocks",
        "_calls",
        "_created",
        "_done",
        "_head",
        "_include_usage",
        "_json_answer",
        "_stop",
        "_tail",
        "_text",
        "_usage",
    )

    def __init__(self, *, created: int, include_usage: bool, json_answer: bool) -> None:
        self._created = created
        self._include_usage = include_usage
        self._json_answer = json_answer
        self._head = b""  # every chunk's bytes up to the delta object
        self._tail = b',"finish_reason":null}]' + (b',"usage":null}' if include_usage else b"}")
        self._text = b"data: " + _TEXT + b"%s}" + self._tail + b"\n\n"  # `%s`: its text
        self._blocks: dict[int, tuple[str, int]] = {}  # Claude index -> (kind, tool index)
        self._calls = 0
        self._usage: dict[str, Any] = {}
        self._stop: Any = None
        self._done = False

    @property
    def done(self) -> bool:
        """True once [DONE] or an error went out: nothing more may follow."""
        return self._done

    def _chunk(self, delta: bytes) -> bytes:
        return b"data: " + self._head + delta + self._tail + b"\n\n"

    def feed(self, events: list[tuple[str, bytes]]) -> list[bytes]:
        """`event` for each of one upstream read's events; a text delta (most of a
        stream) is translated inline: one parse, its text encoded once between fragments."""
        out: list[bytes] = []
        loads, dumps = orjson.loads, orjson.dumps
        for name, data in events:
            if self._done:
                break  # nothing may follow [DONE] or an error
            if name == "content_block_delta":
                event = loads(data)
                delta = event.get("delta")
                if type(delta) is not dict or delta.get("type") != "text_delta":
                    out += self._delta(event)
                elif text := delta.get("text"):
                    out.append(self._text % dumps(text))
            elif name in _WRITING:
                out += self.event(name, data)
        return out

    def event(self, name: str, data: bytes) -> list[bytes]:
        if self._done:
            return []
        if name == "content_block_delta":
            return self._delta(orjson.loads(data))
        if name == "message_start":
            return self._start(orjson.loads(data).get("message") or {})
        if name == "content_block_start":
            event = orjson.loads(data)
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        if name == "message_delta":
            self._stop = fold_message_delta(data, self._stop, self._usage)
            return []
        if name == "message_stop":
            return self._finish()
        if name == "error":
            return self.error(*error_of(data))
        return []  # ping, content_block_stop and event types added later

    def error(self, kind: str, message: str) -> list[bytes]:
        self._done = True
        return [error_event(kind, message)]

    def _start(self, message: dict[str, Any]) -> list[bytes]:
        self._usage = dict(message.get("usage") or {})
        chunk_id, model = completion_id(message.get("id")), message.get("model", "")
        self._head = _HEAD % (orjson.dumps(chunk_id), self._created, orjson.dumps(model))
        escaped = self._head.replace(b"%", b"%%")
        self._text = b"data: " + escaped + _TEXT + b"%s}" + self._tail + b"\n\n"
        return [self._chunk(b'{"role":"assistant","content":""}')]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        kind = str(block.get("type", ""))
        if kind == "tool_use" and self._json_answer and block.get("name") == JSON_TOOL:
            self._blocks[index] = ("json", 0)
            return []
        if kind != "tool_use":
            self._blocks[index] = (kind, 0)
            text = block.get("text") if kind == "text" else None
            return [self._chunk(orjson.dumps({"content": text}))] if text else []
        call = self._calls
        self._calls += 1
        self._blocks[index] = ("tool_use", call)
        function = {"name": block.get("name", ""), "arguments": ""}
        opening = {"id": block.get("id"), "type": "function", "function": function}
        return [self._chunk(orjson.dumps({"tool_calls": [{"index": call, **opening}]}))]

    def _delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [self._chunk(orjson.dumps({"content": text}))] if text else []
        if kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if not fragment:
                return []
            block_kind, call = self._blocks.get(int(event.get("index", 0)), ("", 0))
            if block_kind == "json":
                return [self._chunk(orjson.dumps({"content": fragment}))]
            arguments = {"index": call, "function": {"arguments": fragment}}
            return [self._chunk(orjson.dumps({"tool_calls": [arguments]}))]
        if kind == "thinking_delta":
            thought = delta.get("thinking")
            return [self._chunk(orjson.dumps({"reasoning_content": thought}))] if thought else []
        return []  # signature and citation deltas have no OpenAI counterpart

    def _finish(self) -> list[bytes]:
        self._done = True
        only_json = self._json_answer and self._calls == 0
        reason = finish_reason(self._stop, only_json)
        last = self._head + b'{},"finish_reason":"' + reason.encode() + b'"}]'
        last += b',"usage":null}' if self._include_usage else b"}"
        out = [b"data: " + last + b"\n\n"]
        if self._include_usage:
            usage = orjson.dumps(openai_usage(self._usage))
            out.append(
                b"data: "
                + self._head[: self._head.index(b'"choices"')]
                + b'"choices":[],'
                + b'"usage":'
                + usage
                + b"}\n\n"
            )
        out.append(DONE)
        return out
