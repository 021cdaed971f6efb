"""The Responses API codec without sockets: request -> Claude body, Claude events -> the
Responses event stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from promptrelay.api.openai.errors import FieldError
from promptrelay.api.openai.responses_answer import (
    ResponseShape,
    response_object,
    responses_usage,
    usage_bytes,
)
from promptrelay.api.openai.responses_request import responses_request
from promptrelay.api.openai.responses_stream import ResponseEvents
from promptrelay.core.sse import SseParser, message_events

MODEL = "claude-sonnet-4-6"


def _translate(**body: Any) -> dict[str, Any]:
    return responses_request(body, model=MODEL, default_max_tokens=1024).body


def test_a_string_input_and_instructions():
    assert _translate(input="hi", instructions="be brief") == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
        "system": "be brief",
    }


def test_n8n_items_system_role_and_empty_text_object():
    out = _translate(
        input=[
            {"type": "message", "role": "system", "content": "sys"},
            {"type": "message", "role": "user", "content": "hello"},
        ],
        text={},
        temperature=0.3,
        max_output_tokens=50,
    )
    assert out["system"] == "sys" and out["messages"] == [{"role": "user", "content": "hello"}]
    assert out["temperature"] == 0.3 and out["max_tokens"] == 50 and "tools" not in out


def test_function_call_items_become_tool_use_and_tool_result():
    out = _translate(
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        ],
        tools=[{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        tool_choice={"type": "function", "name": "w"},
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {"a": 1}}],
    }
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "rain"}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "w"}


def test_history_comes_first_and_reasoning_effort_sets_thinking():
    history = (
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    )
    request = responses_request(
        {"input": "next", "reasoning": {"effort": "low"}, "previous_response_id": "resp_x"},
        model=MODEL,
        default_max_tokens=1000,
        history=history,
    )
    assert [m["role"] for m in request.body["messages"]] == ["user", "assistant", "user"]
    assert request.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert request.body["max_tokens"] == 3048 and request.previous_response_id == "resp_x"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "background": True}, "background"),
        ({"input": []}, "input"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0]",
        ),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"input": "x", "store": "yes"}, "store"),
    ],
)
def test_refusals_name_the_field(body, param):
    with pytest.raises(FieldError) as caught:
        _translate(**body)
    assert caught.value.param == param


def _message() -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_9", "name": "w", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3},
    }


def test_stream_events_and_the_json_answer_agree():
    shape = ResponseShape({"input": "x"}, MODEL, True)
    events = ResponseEvents(shape, response_id="resp_1", created_at=1, json_answer=False)
    out: list[bytes] = []
    parser = SseParser()
    for chunk in message_events(_message()):
        for name, data in parser.feed(chunk):
            out += events.event(name, data)
    decoded = [orjson.loads(frame.split(b"data: ", 1)[1]) for frame in out]
    assert [event["sequence_number"] for event in decoded] == list(range(len(decoded)))
    assert decoded[0]["type"] == "response.created" and decoded[-1]["type"] == "response.completed"
    whole = response_object(
        _message(), shape, response_id="resp_1", created_at=1, json_answer=False
    )
    assert decoded[-1]["response"]["output"] == whole["output"]
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message", "function_call"]
    assert whole["usage"]["input_tokens_details"] == {"cached_tokens": 3}
    assert events.message is not None and events.message["content"][2]["input"] == {"city": "Oslo"}


def test_an_error_event_fails_the_response():
    events = ResponseEvents(
        ResponseShape({}, MODEL, True), response_id="r", created_at=1, json_answer=False
    )
    error = orjson.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}}
    )
    kinds = [
        orjson.loads(frame.split(b"data: ", 1)[1])["type"] for frame in events.event("error", error)
    ]
    assert kinds == ["error", "response.failed"] and events.done and events.message is None


@pytest.mark.parametrize(
    "body",
    [{"input": "x"}, {"input": "x", "max_output_tokens": 9, "store": False}, {"instructions": "i"}],
)
@pytest.mark.parametrize("status", ["in_progress", "completed", "incomplete"])
def test_the_encoded_response_is_the_response_encoded(body: dict[str, Any], status: str) -> None:
    usage = {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3}
    output = [{"type": "message", "id": "msg_1_0"}, {"type": "reasoning", "id": "rs_1_1"}]
    for shape in (ResponseShape(body, MODEL, True), ResponseShape(body, MODEL, True)):
        whole = shape.response("resp_1", 7, status, output, responses_usage(usage))
        encoded = shape.encoded(
            b'"resp_1"',
            7,
            status.encode(),
            b",".join(orjson.dumps(item) for item in output),
            usage_bytes(usage),
        )
        assert encoded == orjson.dumps(whole)
