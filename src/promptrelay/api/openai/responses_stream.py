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
    reasoning_item,
    usage_bytes,
)

__all__ = ["ResponseEvents"]


def _event(kind: str) -> bytes:
    """An event's bytes up to its sequence number, then `%d` (the number) and `%s` (its
    other fields, encoded: `,"name":value...`)."""
    head = b'event: %s\ndata: {"type":"%s","sequence_number":' % (kind.encode(), kind.encode())
    return head + b"%d%s}\n\n"


_CREATED = _event("response.created")
_IN_PROGRESS = _event("response.in_progress")
_ITEM_ADDED = _event("response.output_item.added")
_PART_ADDED = _event("response.content_part.added")
_TEXT_DELTA = _event("response.output_text.delta")
_TEXT_DONE = _event("response.output_text.done")
_PART_DONE = _event("response.content_part.done")
_ITEM_DONE = _event("response.output_item.done")
_CALL_DELTA = _event("response.function_call_arguments.delta")
_CALL_DONE = _event("response.function_call_arguments.done")
_COMPLETED = _event("response.completed")
_INCOMPLETE = _event("response.incomplete")
_PART = b'{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}'  # its text encoded
_MESSAGE = b'{"type":"message","id":%s,"status":"%s","role":"assistant","content":[%s]}'
_OPENED = b'{"type":"message","id":%s,"status":"in_progress","role":"assistant","content":[]}'


def _with(event: bytes, fields: bytes) -> bytes:
    """An `_event` template whose fields are a template too."""
    return event.replace(b"%s", fields)


# a text item's events; `item_at` its `,"item_id":...,"output_index":N` fields
_TEXT_ADDED = _with(_ITEM_ADDED, b',"output_index":%d,"item":' + _OPENED)  # at, quoted id
_TEXT_PART_ADDED = _with(_PART_ADDED, b'%s,"content_index":0,"part":' + _PART % b'""')  # item_at
_TEXT_DONE_ = _with(_TEXT_DONE, b'%s,"content_index":0,"text":%s,"logprobs":[]')  # item_at, text
_TEXT_PART_DONE = _with(_PART_DONE, b'%s,"content_index":0,"part":%s')  # item_at, part
_TEXT_ITEM_DONE = _with(_ITEM_DONE, b',"output_index":%d,"item":%s')  # at, message
_ROLES = {"tool_use": "call", "thinking": "thinking"}  # the item of each other block kind


class _Item:
    __slots__ = ("at", "block", "delta", "id", "kind", "output_index", "parts", "quoted", "text")

    def __init__(self, kind: str, item: str, output_index: int, block: dict[str, Any]) -> None:
        self.kind = kind  # "text" (also the JSON answer), "call" or "thinking"
        self.id = item
        self.quoted = orjson.dumps(item)
        self.output_index = output_index
        self.block = block
        self.parts: list[str] = []
        # `,"item_id":"...","output_index":N`: the head of most of its events' fields
        self.at = b',"item_id":%s,"output_index":%d' % (self.quoted, output_index)
        # a delta event's encoded fields up to the delta itself, the same for every delta
        self.delta = self.at + (b',"content_index":0,"delta":' if kind == "text" else b',"delta":')
        # a text delta event: `%d` its sequence number, `%s` its encoded text
        self.text = _TEXT_DELTA.replace(
            b"%s", self.delta.replace(b"%", b"%%") + b'%s,"logprobs":[]'
        )


class ResponseEvents:
    def __init__(
        self,
        shape: ResponseShape,
        *,
        response_id: str,
        created_at: int,
        json_answer: bool,
        keep_message: bool = True,
    ) -> None:
        self._shape = shape
        self._keep = keep_message  # fold the Claude message as it passes (`message`)
        self._id = response_id
        self._created = created_at
        self._json_answer = json_answer
        self._sequence = 0
        self._items: dict[int, _Item] = {}
        self._output: list[bytes] = []  # the items encoded, each b"" until it is done
        self._message_id: Any = None
        self._usage: dict[str, Any] = {}
        self._stop: Any = None
        self.message: dict[str, Any] | None = None  # the folded Claude message, once complete
        self.done = False
        self.completed = False  # the stream ended with Claude's message_stop

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _next(self) -> int:
        sequence = self._sequence
        self._sequence = sequence + 1
        return sequence

    def feed(self, events: list[tuple[str, bytes]]) -> list[bytes]:
        """`event` for each of one upstream read's events; a text delta of a text item
        (most of a stream) is translated inline: one parse, its text encoded once."""
        out: list[bytes] = []
        loads, dumps, items = orjson.loads, orjson.dumps, self._items
        for name, data in events:
            if name != "content_block_delta" or self.done or self._keep:
                out += self.event(name, data)
                continue
            event = loads(data)
            delta, item = event.get("delta"), items.get(event.get("index", 0))
            plain = type(delta) is dict and delta.get("type") == "text_delta"
            if item is None or item.kind != "text" or not plain:
                out += self._delta(event)
            elif (text := delta.get("text")) and type(text) is str:
                item.parts.append(text)
                sequence = self._sequence
                self._sequence = sequence + 1
                out.append(item.text % (sequence, dumps(text)))
        return out

    def _response(self, status: bytes) -> bytes:
        """The response so far, encoded: `,"response":{...}`."""
        usage = b"null" if status == b"in_progress" else usage_bytes(self._usage)
        output = b",".join([item for item in self._output if item])
        whole = self._shape.encoded(orjson.dumps(self._id), self._created, status, output, usage)
        return b',"response":' + whole

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
            if self._keep:
                self.message = {**message, "content": []}
            first = self._response(b"in_progress")
            return [_CREATED % (self._next(), first), _IN_PROGRESS % (self._next(), first)]
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
        output = [orjson.Fragment(item) for item in self._output if item]
        usage = usage_bytes(self._usage)
        failed = self._shape.response(self._id, self._created, "failed", output, None)
        failed.update(error={"code": kind, "message": message}, usage=orjson.Fragment(usage))
        return [
            self._emit("error", code=kind, message=message, param=None),
            self._emit("response.failed", response=failed),
        ]

    def _start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        if self.message is not None:
            self.message["content"].append(dict(block))
        kind = block.get("type")
        role: str | None
        if kind == "text" or (kind == "tool_use" and self._json_answer):
            role = "text" if kind == "text" or block.get("name") == JSON_TOOL else "call"
        else:
            role = _ROLES.get(str(kind))
        if role is None:
            return []
        at = len(self._output)
        item = _Item(role, item_id(self._message_id, index, block), at, block)
        self._items[index] = item
        self._output.append(b"")  # its place in `output`, filled when the item is done
        if role == "text":
            sequence = self._sequence
            self._sequence = sequence + 2
            return [
                _TEXT_ADDED % (sequence, at, item.quoted),
                _TEXT_PART_ADDED % (sequence + 1, item.at),
            ]
        if role == "thinking":
            added = reasoning_item(item.id, "")
        else:
            added = call_item(block, "", "in_progress")
        fields = b',"output_index":%d,"item":%s' % (at, orjson.dumps(added))
        return [_ITEM_ADDED % (self._next(), fields)]

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
            return [item.text % (self._next(), orjson.dumps(piece))]
        if item.kind == "call":
            return [_CALL_DELTA % (self._next(), item.delta + orjson.dumps(piece))]
        return []

    def _stop_block(self, index: int) -> list[bytes]:
        item = self._items.pop(index, None)
        if self.message is not None and index < len(self.message["content"]):
            _close(self.message["content"][index])
        if item is None:
            return []
        at = item.output_index
        if item.kind == "thinking":
            thinking = reasoning_item(item.id, "".join(item.parts))
            self._output[at] = orjson.dumps(thinking)
            return [
                _ITEM_DONE % (self._next(), b',"output_index":%d,"item":' % at + self._output[at])
            ]
        if item.kind == "call":
            arguments = "".join(item.parts) or "{}"
            self._output[at] = orjson.dumps(call_item(item.block, arguments))
            done = b'%s,"arguments":%s' % (item.at, orjson.dumps(arguments))
            return [
                _CALL_DONE % (self._next(), done),
                _ITEM_DONE % (self._next(), b',"output_index":%d,"item":' % at + self._output[at]),
            ]
        text = orjson.dumps("".join(item.parts))
        part = _PART % text
        self._output[at] = message = _MESSAGE % (item.quoted, b"completed", part)
        sequence = self._sequence
        self._sequence = sequence + 3
        return [
            _TEXT_DONE_ % (sequence, item.at, text),
            _TEXT_PART_DONE % (sequence + 1, item.at, part),
            _TEXT_ITEM_DONE % (sequence + 2, at, message),
        ]

    def _finish(self) -> list[bytes]:
        self.done = self.completed = True
        if self.message is not None:
            self.message.update(stop_reason=self._stop, usage=self._usage)
        if self._stop == "max_tokens":
            return [_INCOMPLETE % (self._next(), self._response(b"incomplete"))]
        return [_COMPLETED % (self._next(), self._response(b"completed"))]


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
