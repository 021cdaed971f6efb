"""Streamed chat completions and JSON answers through the openai SDK, a real promptrelay
and the real fake upstream (scripted tool calls, cache usage, failures midway)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pydantic
import pytest

GATEWAY_KEY = "sk-gateway-secret"
MODEL = "claude-sonnet-4-6"
CALLS = [
    {"name": "lookup", "input": {"q": 'say "hi" \\ there', "city": "Zürich ✓", "n": [1, 2.5]}},
    {"name": "convert", "input": {"amount": 12, "to": "EUR", "nested": {"k": None}}},
]
TOOLS: Any = [
    {"type": "function", "function": {"name": call["name"], "parameters": {"type": "object"}}}
    for call in CALLS
]


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key=GATEWAY_KEY, anthropic_base_url=fake_upstream.url, upstream_retries=0
    )


@pytest.fixture
def client(live):
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key="sk-any", max_retries=0) as sdk:
        yield sdk


def _question(text: str = "what now?") -> Any:
    return [{"role": "user", "content": text}]


def test_two_streamed_tool_calls_reassemble_byte_identical(client, fake_upstream):
    fake_upstream.configure(tool_calls=CALLS, stream_chunks=3)
    stream = client.chat.completions.create(
        model=MODEL, messages=_question(), tools=TOOLS, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id is not None:
                assert entry["id"] is None, "id sent once"
                entry["id"] = call.id
                assert call.function is not None
                entry["name"] = call.function.name
            if call.function is not None and call.function.arguments:
                entry["arguments"] += call.function.arguments
    assert sorted(calls) == [0, 1]
    for index, call in enumerate(CALLS):
        assert calls[index]["name"] == call["name"]
        assert calls[index]["id"].startswith("toolu_")
        assert calls[index]["arguments"] == orjson.dumps(call["input"]).decode()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_non_streamed_tool_calls_carry_the_same_arguments(client, fake_upstream):
    fake_upstream.configure(tool_calls=CALLS)
    answer = client.chat.completions.create(model=MODEL, messages=_question(), tools=TOOLS)
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == [
        orjson.dumps(call["input"]).decode() for call in CALLS
    ]
    assert answer.choices[0].finish_reason == "tool_calls"


def test_cached_tokens_are_the_upstream_cache_reads_in_json_and_stream(client, fake_upstream):
    fake_upstream.configure(cache_read_tokens=1500, cache_creation_tokens=20)
    answer = client.chat.completions.create(model=MODEL, messages=_question())
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 1500
    assert answer.usage.prompt_tokens > 1520
    stream = client.chat.completions.create(
        model=MODEL,
        messages=_question("other"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1500
    assert all(chunk.usage is None for chunk in chunks[:-1])


class Weather(pydantic.BaseModel):
    city: str
    celsius: float
    tags: list[str]


def test_parse_with_a_pydantic_model_reads_the_scripted_json(client, fake_upstream):
    scripted: dict[str, Any] = {"city": "Oslo", "celsius": 4.5, "tags": ["rain", "wind"]}
    fake_upstream.configure(json_answer=scripted)
    parsed = client.chat.completions.parse(
        model=MODEL, messages=_question("weather?"), response_format=Weather
    )
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.parsed == Weather(**scripted)
    json_object = client.chat.completions.create(
        model=MODEL, messages=_question("as json"), response_format={"type": "json_object"}
    )
    assert orjson.loads(json_object.choices[0].message.content or "") == scripted


def test_a_failure_midway_is_an_openai_error_event(client, fake_upstream):
    fake_upstream.configure(stream_chunks=4, stream_error_after=2)
    stream = client.chat.completions.create(model=MODEL, messages=_question(), stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "Overloaded" in caught.value.message
    assert "".join(seen)  # the text before the failure got through


def test_a_cached_stream_replays_the_same_text(client, fake_upstream):
    texts = []
    for _ in range(2):
        stream = client.chat.completions.create(model=MODEL, messages=_question(), stream=True)
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts[0] and texts[0] == texts[1]
    assert fake_upstream.stats()["by_path"] == {"/v1/messages": 1}


async def _read_stream(session: aiohttp.ClientSession, url: str, body: Any) -> list[Any]:
    async with session.post(url, json=body) as response:
        assert response.status == 200
        raw = await response.read()
    events = [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


async def test_fifty_identical_streams_make_one_upstream_call(live, fake_upstream):
    fake_upstream.configure(tool_calls=CALLS, stream_chunks=8, chunk_interval_ms=20)
    body = {"model": MODEL, "messages": _question("together"), "tools": TOOLS, "stream": True}
    url = f"{live.url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        streams = await asyncio.gather(*(_read_stream(session, url, body) for _ in range(50)))
    assert fake_upstream.stats()["by_path"] == {"/v1/messages": 1}
    first = [
        {key: value for key, value in chunk.items() if key not in ("id", "created")}
        for chunk in streams[0]
    ]
    assert first[0]["choices"][0]["delta"]["role"] == "assistant"
    assert first[-1]["choices"][0]["finish_reason"] == "tool_calls"
    for chunks in streams[1:]:
        assert [
            {key: value for key, value in chunk.items() if key not in ("id", "created")}
            for chunk in chunks
        ] == first
