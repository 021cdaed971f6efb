"""The Chat Completions codec without sockets: request -> Claude body, Claude -> OpenAI."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from promptrelay.api.openai.chat_answer import chat_completion
from promptrelay.api.openai.chat_request import chat_request
from promptrelay.api.openai.chat_stream import DONE, ChatChunks
from promptrelay.api.openai.content import JSON_TOOL
from promptrelay.api.openai.errors import FieldError
from promptrelay.core.sse import SseParser, message_events

MODEL = "claude-sonnet-4-6"


def _translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return chat_request(body, model=MODEL, default_max_tokens=1024).body


def test_n8n_body_without_options_gets_the_default_max_tokens():
    out = _translate(model="gpt-4o-mini", stream=False)
    assert out == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_system_and_developer_become_system_and_same_roles_merge():
    out = _translate(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a"},
            {"role": "developer", "content": [{"type": "text", "text": "use metric"}]},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
        ]
    )
    assert out["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "use metric"},
    ]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]


def test_one_system_message_is_a_plain_string():
    out = _translate(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    )
    assert out["system"] == "s"


def test_images_and_pdfs_become_claude_blocks():
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
    ]
    blocks = _translate(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert blocks[3]["type"] == "document"
    assert blocks[3]["source"] == {
        "type": "base64",
        "media_type": "application/pdf",
        "data": "JVBERi0=",
    }


def test_tool_calls_and_tool_results_round_trip_into_claude_blocks():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    out = _translate(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "call_2"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "sun"}],
            },
        ],
        tools=[
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "sun"},
        ],
    }
    assert out["tools"] == [{"name": "weather", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_mapping(choice, expected):
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert _translate(tools=tools, tool_choice=choice)["tool_choice"] == expected


def test_sampling_limits_stop_and_user():
    out = _translate(
        temperature=1.6, top_p=0.5, max_tokens=10, max_completion_tokens=20, stop="END", user="u-1"
    )
    assert out["temperature"] == 1.0 and "top_p" not in out
    assert out["max_tokens"] == 20
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert _translate(top_p=0.5)["top_p"] == 0.5


def test_reasoning_effort_turns_on_thinking_and_frees_a_forced_tool():
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = _translate(
        reasoning_effort="high",
        temperature=0.2,
        max_tokens=100,
        tools=tools,
        tool_choice="required",
    )
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert out["max_tokens"] == 24676
    assert "temperature" not in out and out["tool_choice"] == {"type": "auto"}
    assert "thinking" not in _translate(reasoning_effort="minimal")


def test_json_schema_is_a_forced_tool():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "X", "schema": schema, "strict": True}}
    out = _translate(response_format=fmt)
    assert out["tools"][-1]["name"] == JSON_TOOL and out["tools"][-1]["input_schema"] == schema
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    assert "tools" not in _translate(response_format={"type": "text"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_refused_fields_name_themselves(field, value):
    with pytest.raises(FieldError) as caught:
        _translate(**{field: value})
    assert caught.value.param == field and caught.value.status == 400


def test_no_op_values_of_refused_fields_and_unknown_fields_pass():
    _translate(
        n=1,
        logprobs=False,
        logit_bias={},
        modalities=["text"],
        seed=3,
        store=True,
        service_tier="auto",
    )


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "system", "content": "only"}], "messages"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "messages[0].content[0]"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}],
            "messages[0].content[0].image_url.url",
        ),
        ([{"role": "tool", "content": "r"}], "messages[0].tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_messages_name_the_part(messages, param):
    with pytest.raises(FieldError) as caught:
        _translate(messages=messages)
    assert caught.value.param == param


def _message(content: list[dict[str, Any]], stop: str, **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_answer_with_tool_calls_thinking_and_cached_usage():
    message = _message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "tool_use",
        cache_read_input_tokens=100,
        cache_creation_input_tokens=7,
    )
    answer = chat_completion(message, created=1, json_answer=False)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 117,
        "completion_tokens": 5,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reasons(stop, reason):
    answer = chat_completion(
        _message([{"type": "text", "text": "x"}], stop), created=1, json_answer=False
    )
    assert answer["choices"][0]["finish_reason"] == reason


def test_json_tool_answer_is_content_with_stop():
    message = _message(
        [{"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"a": 1}}], "tool_use"
    )
    choice = chat_completion(message, created=1, json_answer=True)["choices"][0]
    assert choice["message"]["content"] == '{"a":1}' and choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]


def _stream(message: dict[str, Any], **options: Any) -> list[Any]:
    chunks = ChatChunks(
        created=1, include_usage=options.get("usage", False), json_answer=options.get("json", False)
    )
    out: list[bytes] = []
    parser = SseParser()
    for event in message_events(message):
        for name, data in parser.feed(event):
            out += chunks.event(name, data)
    raw = b"".join(out)
    assert raw.endswith(DONE)
    return [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]


def test_stream_role_first_then_tool_calls_each_with_its_index():
    first = {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {"x": "é" * 60}}
    second = {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {"y": [1, 2, 3]}}
    chunks = _stream(
        _message(
            [{"type": "text", "text": "ok"}, first, second], "tool_use", cache_read_input_tokens=4
        ),
        usage=True,
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[1:-2]:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(
                call["index"],
                {"id": call.get("id"), "name": call["function"].get("name"), "args": ""},
            )
            assert "id" not in call or entry["id"] == call["id"]
            entry["args"] += call["function"]["arguments"]
    assert calls[0]["id"] == "toolu_1" and calls[1]["name"] == "b"
    assert orjson.loads(calls[0]["args"]) == first["input"]
    assert orjson.loads(calls[1]["args"]) == second["input"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 4
    }


def test_stream_error_event_ends_the_stream():
    chunks = ChatChunks(created=1, include_usage=False, json_answer=False)
    error = orjson.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    (event,) = chunks.event("error", error)
    assert orjson.loads(event[6:])["error"]["message"] == "Overloaded"
    assert chunks.done and chunks.event("message_stop", b"{}") == []
