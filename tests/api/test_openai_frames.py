"""The streams' cheap paths give what the general ones give, byte for byte.

ClaudeFrames (the OpenAI faces' SSE reader) against SseParser, and the encoders' `feed`
(one call per upstream read) against `event` called per event, over Claude's own
streams and over frames outside Anthropic's shape, cut at every kind of boundary.
"""

from __future__ import annotations

from typing import Any

import pytest

from promptrelay.api.openai.chat_stream import ChatChunks
from promptrelay.api.openai.claude_events import ClaudeFrames
from promptrelay.api.openai.responses_answer import ResponseShape
from promptrelay.api.openai.responses_stream import ResponseEvents
from promptrelay.core.sse import SseParser, message_events

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "thinking", "thinking": "weigh it " * 12, "signature": "sig"},
        {"type": "text", "text": 'say "hi"\nthen é ' * 9},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": [1, "two"]}},
        {"type": "tool_use", "id": "toolu_2", "name": "json_answer", "input": {"a": "b" * 70}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 2},
}
CLAUDE = b"".join(message_events(MESSAGE))
ODD = (
    b": a comment\n\n"
    b"event: ping\ndata: {}\n\n"
    b"event:content_block_stop\ndata:{}\n\n"  # no spaces after the colons
    b'event: future_event_type\ndata: {"type":"future_event_type"}\n\n\n'
    b'data: {"no":"event line"}\n\n'
    b"id: 7\nevent: ping\ndata: {}\n\n"
    b'event: message_delta\ndata: {"a":\ndata: 1}\n\n'  # two data lines
    b"event: ping\ndata: \n\n"
)
STREAMS = {
    "claude": CLAUDE,
    "claude-crlf": CLAUDE.replace(b"\n", b"\r\n"),
    "odd": ODD,
    "odd-then-claude": ODD + CLAUDE,
}


def _pieces(stream: bytes, size: int) -> list[bytes]:
    return [stream[at : at + size] for at in range(0, len(stream), size)]


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("size", [1, 2, 5, 7, 64, 1000, 100_000])
def test_claude_frames_match_the_general_parser(name: str, size: int) -> None:
    fast, general = ClaudeFrames(), SseParser()
    for piece in _pieces(STREAMS[name], size):
        assert fast.feed(piece) == general.feed(piece)


def _encoders(json_answer: bool, usage: bool) -> list[Any]:
    shape = ResponseShape({"input": "x"}, "claude-sonnet-4-6", True)
    return [
        ChatChunks(created=1, include_usage=usage, json_answer=json_answer),
        ResponseEvents(shape, response_id="resp_1", created_at=1, json_answer=json_answer),
    ]


@pytest.mark.parametrize("json_answer", [False, True])
@pytest.mark.parametrize("usage", [False, True])
@pytest.mark.parametrize("size", [3, 97, 100_000])
def test_feed_writes_what_event_by_event_writes(json_answer: bool, usage: bool, size: int) -> None:
    fed, evented = _encoders(json_answer, usage), _encoders(json_answer, usage)
    for one, other in zip(fed, evented, strict=True):
        parser, out_fed, out_evented = SseParser(), b"", b""
        for piece in _pieces(CLAUDE, size):
            events = parser.feed(piece)
            out_fed += b"".join(one.feed(events))
            out_evented += b"".join(part for n, d in events for part in other.event(n, d))
        assert out_fed == out_evented and one.done and out_fed.count(b"\n\n") > 10
