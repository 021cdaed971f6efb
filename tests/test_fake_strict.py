"""The fake upstream's strict Messages rules and scripted answers (pure parts)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from promptrelay.devtools.fake_config import FakeConfig, validate_knobs
from promptrelay.devtools.fake_script import json_pieces, scripted_message, stream_events
from promptrelay.devtools.fake_strict import InvalidRequest, check_conversation, signature_for

USE = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}


def _body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 4096, "messages": list(messages), **extra}


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def test_a_proper_tool_round_trip_passes():
    check_conversation(
        _body(_user("q"), _assistant([USE]), _user([RESULT, {"type": "text", "text": "go"}]))
    )


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ((_user("a"), _user("b")), "alternate"),
        ((_user(""),), "non-empty"),
        ((_user([]),), "non-empty"),
        ((_user([{"type": "text", "text": ""}]),), "non-empty"),
        ((_user([USE]),), "not allowed"),
        ((_user("q"), _assistant([USE]), _user("no result")), "without `tool_result`"),
        ((_user([RESULT]),), "unexpected `tool_use_id`"),
        ((_user("q"), _assistant([USE]), _user([{"type": "text", "text": "x"}, RESULT])), "FIRST"),
    ],
)
def test_broken_conversations_are_refused(messages, words):
    with pytest.raises(InvalidRequest, match=words):
        check_conversation(_body(*messages))


def test_thinking_needs_the_signed_block_before_the_tool_call():
    thinking = {"type": "enabled", "budget_tokens": 2048}
    bare = _body(_user("q"), _assistant([USE]), _user([RESULT]), thinking=thinking)
    with pytest.raises(InvalidRequest, match="must start with a thinking block"):
        check_conversation(bare)
    forged = {"type": "thinking", "thinking": "t", "signature": "forged"}
    with pytest.raises(InvalidRequest, match="signature"):
        check_conversation(
            _body(_user("q"), _assistant([forged, USE]), _user([RESULT]), thinking=thinking)
        )
    signed = {"type": "thinking", "thinking": "t", "signature": signature_for("t")}
    check_conversation(
        _body(_user("q"), _assistant([signed, USE]), _user([RESULT]), thinking=thinking)
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "object"),
        ({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "pattern"),
        ({"tool_choice": {"type": "tool", "name": "missing"}}, "no tool named"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, ">= 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8192}}, "greater than"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 0.5},
            "temperature",
        ),
    ],
)
def test_contradicting_settings_are_refused(extra, words):
    with pytest.raises(InvalidRequest, match=words):
        check_conversation(_body(_user("q"), **extra))


def test_json_pieces_join_back_and_cut_after_backslashes():
    text = orjson.dumps({"quote": 'say "hi"\\', "unicode": "é✓", "n": [1, 2]}).decode()
    pieces = json_pieces(text)
    assert "".join(pieces) == text and pieces[0] == ""
    assert any(piece.endswith("\\") for piece in pieces)
    assert len(pieces) > 5


def test_scripted_tool_calls_answer_until_results_arrive():
    config = FakeConfig(tool_calls=[{"name": "a", "input": {"x": 1}}, {"name": "b", "input": {}}])
    message = scripted_message(_body(_user("q")), "msg_1", "Echo", 3, config)
    assert message is not None and message["stop_reason"] == "tool_use"
    uses = [block for block in message["content"] if block["type"] == "tool_use"]
    assert [use["name"] for use in uses] == ["a", "b"] and uses[0]["id"] != uses[1]["id"]
    after = _body(
        _user("q"),
        _assistant(uses),
        _user([{"type": "tool_result", "tool_use_id": u["id"]} for u in uses]),
    )
    answered = scripted_message(after, "msg_2", "Echo", 3, config)
    assert answered is not None and answered["content"] == [{"type": "text", "text": "Echo"}]


def test_stream_events_carry_each_tool_input_whole():
    config = FakeConfig(tool_calls=[{"name": "a", "input": {"s": 'a"b\\c'}}], cache_read_tokens=9)
    message = scripted_message(_body(_user("q")), "msg_1", "Echo", 3, config)
    assert message is not None and message["usage"]["cache_read_input_tokens"] == 9
    head, events, _tail = stream_events(message, 3)
    assert b'"cache_read_input_tokens":9' in head
    partial = "".join(
        orjson.loads(event.split(b"data: ", 1)[1])["delta"]["partial_json"]
        for event in events
        if b"input_json_delta" in event
    )
    assert partial == orjson.dumps({"s": 'a"b\\c'}).decode()


def test_new_knobs_are_validated():
    assert validate_knobs({"json_answer": {"a": 1}, "tool_calls": None}) == {
        "json_answer": {"a": 1},
        "tool_calls": None,
    }
    bad: dict[str, Any]
    for bad in ({"json_answer": [1]}, {"tool_calls": [{"input": {}}]}, {"cache_read_tokens": -1}):
        with pytest.raises(ValueError):
            validate_knobs(bad)
