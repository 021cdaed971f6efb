"""SSE: a Message replays as the real event sequence and folds back unchanged."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from promptrelay.core.sse import MessageAssembler, SseParser, message_events

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "thinking", "thinking": "let me think " * 10, "signature": "sig=="},
        {"type": "text", "text": "The answer is 42. " * 8},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x", "n": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 34},
}


def _fold(chunks: list[bytes]) -> MessageAssembler:
    parser, assembler = SseParser(), MessageAssembler()
    for chunk in chunks:
        for name, data in parser.feed(chunk):
            assembler.add(name, data)
    return assembler


def test_replay_sequence_has_the_api_event_order():
    names = [event.split(b"\n", 1)[0].removeprefix(b"event: ") for event in message_events(MESSAGE)]
    assert names[0] == b"message_start"
    assert names[-2:] == [b"message_delta", b"message_stop"]
    assert names.count(b"content_block_start") == 3
    assert names.count(b"content_block_stop") == 3
    payload = b"".join(message_events(MESSAGE))
    assert b"thinking_delta" in payload
    assert b"signature_delta" in payload
    assert b"input_json_delta" in payload


def test_replay_folds_back_into_the_same_message():
    assembler = _fold(list(message_events(MESSAGE)))
    assert assembler.complete
    assert assembler.message == MESSAGE


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_parser_is_indifferent_to_chunk_boundaries(cuts):
    stream = b"".join(message_events(MESSAGE))
    chunks, start = [], 0
    for size in cuts:
        chunks.append(stream[start : start + size])
        start += size
    chunks.append(stream[start:])
    assert _fold(chunks).message == MESSAGE


def test_error_event_marks_the_stream_unusable():
    events = list(message_events(MESSAGE))
    error = b"event: error\ndata: " + orjson.dumps({"type": "error"}) + b"\n\n"
    assembler = _fold([*events[:3], error, *events[3:]])
    assert assembler.errored
    assert not assembler.complete


def test_parser_splits_frames_across_chunks_and_crlf_borders():
    stream = (
        b"event: a\r\ndata: 1\r\n\r\n"
        b'event: b\ndata: {"x":\n'
        b"data: 2}\n\n"
        b": comment\n\n"
        b"data: plain\n\n"
    )
    for size in (1, 2, 3, 7, len(stream)):
        parser = SseParser()
        events = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start : start + size])
        assert events == [("a", b"1"), ("b", b'{"x":\n2}'), ("message", b"plain")], size
