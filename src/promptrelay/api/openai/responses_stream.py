"""Claude's Messages stream events as the Responses API's event stream: a pure machine.

    events = ResponseEvents(shape, response_id=..., created_at=..., json_answer=...)
    out = events.feed(parser.feed(upstream_bytes))  # SSE bytes, each with sequence_number
    # (events.event(name, data) translates one event)

Sequence: response.created, response.in_progress; per Claude block an item:
response.output_item.added, then for text response.content_part.added,
response.output_text.delta..., response.output_text.done, response.content_part.done; for
a tool call response.function_call_arguments.delta..., .done; then
response.output_item.done. Last response.completed (or response.incomplete when Claude ran
out of tokens) with the whole response. An upstream error is an `error` event followed by
response.failed. `message` holds the Claude message folded from the events (for the store).
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.openai.claude_events import error_of, fold_message_delta
from promptrelay.api.openai.content import JSON_TOOL
from promptrelay.api.openai.responses_answer import (
    ResponseShape,
    call_item,
    item_id,
    message_item,
    reasoning_item,
    responses_usage,
)

__all__ = ["ResponseEvents"]


_TEXT_DELTA = b"response.output_text.delta"
_CALL_DELTA = b"response.function_call_arguments.delta"


class _Item:
    __slots__ = ("block", "delta", "id", "kind", "output_index", "parts")

    def __init__(self, kind: str, item: str, output_index: int, block: dict[str, Any]) -> None:
        self.kind = kind  # "text" (also the JSON answer), "call" or "thinking"
        self.id = item
        self.output_index = output_index
        self.block = block
        self.parts: list[str] = []
        # a delta event's encoded fields up to the delta itself, the same for every delta
        self.delta = b',"item_id":' + orjson.dumps(item) + b',"output_index":%d' % output_index
        if kind == "text":
            self.delta += b',"content_index":0'
        self.delta += b',"delta":'


class ResponseEvents:
    def __init__(
        self, shape: ResponseShape, *, response_id: str, created_at: int, json_answer: bool
    ) -> None:
        self._shape = shape
        self._id = response_id
        self._created = created_at
        self._json_answer = json_answer
        self._sequence = 0
        self._items: dict[int, _Item] = {}
        self._output: list[dict[str, Any]] = []
        self._message_id: Any = None
        self._usage: dict[str, Any] = {}
        self._stop: Any = None
        self.message: dict[str, Any] | None = None  # the folded Claude message, once complete
        self.done = False

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _emit_encoded(self, kind: bytes, fields: bytes) -> bytes:
        """`_emit` of fields already encoded (`,"name":value...`, in `_emit`'s order)."""
        sequence = self._sequence
        self._sequence += 1
        head = b"event: " + kind + b'\ndata: {"type":"' + kind + b'","sequence_number":'
        return head + b"%d" % sequence + fields + b"}\n\n"

    def feed(self, events: list[tuple[str, bytes]]) -> list[bytes]:
        """`event` for each of one upstream read's events."""
        out: list[bytes] = []
        for name, data in events:
            out += self.event(name, data)
        return out

    def _response(self, status: str) -> dict[str, Any]:
        usage = responses_usage(self._usage) if status != "in_progress" else None
        return self._shape.response(self._id, self._created, status, list(self._output), usage)

    def event(self, name: str, data: bytes) -> list[bytes]:
        if self.done:
            return []
        if name == "content_block_delta":
            return self._delta(orjson.loads(data))
        if name == "content_block_start":
            event = orjson.loads(data)
            return self._start(int(event.get("index", 0)), event.get("content_block") or {})
        if name == "content_block_stop":
            return self._stop_block(int(orjson.loads(data).get("index", 0)))
        if name == "message_start":
            message = orjson.loads(data).get("message") or {}
            self._message_id = message.get("id")
            self._usage = dict(message.get("usage") or {})
            self.message = {**message, "content": []}
            first = b',"response":' + orjson.dumps(self._response("in_progress"))
            return [
                self._emit_encoded(b"response.created", first),
                self._emit_encoded(b"response.in_progress", first),
            ]
        if name == "message_delta":
            self._stop = fold_message_delta(data, self._stop, self._usage)
            return []
        if name == "message_stop":
            return self._finish()
        if name == "error":
            return self.error(*error_of(data))
        return []

    def error(self, kind: str, message: str) -> list[bytes]:
        self.done = True
        self.message = None
        failed = self._response("failed")
        failed["error"] = {"code": kind, "message": message}
        return [
            self._emit("error", code=kind, message=message, param=None),
            self._emit("response.failed", response=failed),
        ]

    def _start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        if self.message is not None:
            self.message["content"].append(dict(block))
        kind = block.get("type")
        json_tool = self._json_answer and block.get("name") == JSON_TOOL
        role = "text" if kind == "text" or (kind == "tool_use" and json_tool) else None
        role = role or {"tool_use": "call", "thinking": "thinking"}.get(str(kind))
        if role is None:
            return []
        item = _Item(role, item_id(self._message_id, index, block), len(self._output), block)
        self._items[index] = item
        self._output.append({})  # its place in `output`, filled when the item is done
        at = item.output_index
        if role == "thinking":
            return [
                self._emit(
                    "response.output_item.added", output_index=at, item=reasoning_item(item.id, "")
                )
            ]
        if role == "call":
            added = call_item(block, "", "in_progress")
            return [self._emit("response.output_item.added", output_index=at, item=added)]
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._emit(
                "response.output_item.added",
                output_index=at,
                item=message_item(item.id, "", "in_progress"),
            ),
            self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=at,
                content_index=0,
                part=part,
            ),
        ]

    def _delta(self, event: dict[str, Any]) -> list[bytes]:
        index = int(event.get("index", 0))
        delta = event.get("delta") or {}
        piece = delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""
        if self.message is not None and index < len(self.message["content"]):
            _fold(self.message["content"][index], delta)
        item = self._items.get(index)
        if item is None or not piece or not isinstance(piece, str):
            return []
        item.parts.append(piece)
        if item.kind == "text":
            fields = item.delta + orjson.dumps(piece) + b',"logprobs":[]'
            return [self._emit_encoded(_TEXT_DELTA, fields)]
        if item.kind == "call":
            return [self._emit_encoded(_CALL_DELTA, item.delta + orjson.dumps(piece))]
        return []

    def _stop_block(self, index: int) -> list[bytes]:
        item = self._items.pop(index, None)
        if self.message is not None and index < len(self.message["content"]):
            _close(self.message["content"][index])
        if item is None:
            return []
        text, at = "".join(item.parts), item.output_index
        if item.kind == "thinking":
            self._output[at] = reasoning_item(item.id, text)
            return [self._emit("response.output_item.done", output_index=at, item=self._output[at])]
        if item.kind == "call":
            arguments = text or "{}"
            self._output[at] = call_item(item.block, arguments)
            return [
                self._emit(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=at,
                    arguments=arguments,
                ),
                self._emit("response.output_item.done", output_index=at, item=self._output[at]),
            ]
        self._output[at] = message_item(item.id, text)
        part = self._output[at]["content"][0]
        return [
            self._emit(
                "response.output_text.done",
                item_id=item.id,
                output_index=at,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._emit(
                "response.content_part.done",
                item_id=item.id,
                output_index=at,
                content_index=0,
                part=part,
            ),
            self._emit("response.output_item.done", output_index=at, item=self._output[at]),
        ]

    def _finish(self) -> list[bytes]:
        self.done = True
        self._output = [item for item in self._output if item]
        if self.message is not None:
            self.message.update(stop_reason=self._stop, usage=self._usage)
        if self._stop == "max_tokens":
            return [self._emit("response.incomplete", response=self._response("incomplete"))]
        return [self._emit("response.completed", response=self._response("completed"))]


def _fold(block: dict[str, Any], delta: dict[str, Any]) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta.get("text", "")
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature", "")
    elif kind == "input_json_delta":
        block["_partial"] = block.get("_partial", "") + delta.get("partial_json", "")


def _close(block: dict[str, Any]) -> None:
    if "_partial" in block:
        partial = block.pop("_partial")
        block["input"] = orjson.loads(partial) if partial else {}
