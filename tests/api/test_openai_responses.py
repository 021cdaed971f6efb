"""POST /v1/responses and GET /v1/responses/{id} with the official openai SDK, through a
real promptrelay to the real (strict) fake upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from promptrelay.cache.memory import MemoryTier
from promptrelay.cache.tiered import TieredCache
from promptrelay.core.responses_store import ResponseStore

GATEWAY_KEY = "sk-gateway-secret"
CLIENT_KEYS = ("sk-team-a", "sk-team-b")
MODEL = "claude-sonnet-4-6"
WEATHER: Any = [
    {
        "type": "function",
        "name": "weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        upstream_retries=0,
        promptrelay_api_keys=",".join(CLIENT_KEYS),
    )


def _client(live: Any, key: str = CLIENT_KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def test_text_answer_and_instructions(live, fake_upstream):
    with _client(live) as client:
        response = client.responses.create(model=MODEL, input="hello", instructions="be brief")
    assert response.status == "completed" and response.object == "response"
    assert response.output_text.startswith("Echo: hello")
    assert response.id.startswith("resp_") and len(response.id) > 40
    assert response.usage is not None and response.usage.total_tokens > 0


def test_function_call_then_its_output_round_trip(live, fake_upstream):
    fake_upstream.configure(tool_calls=[{"name": "weather", "input": {"city": "Oslo"}}])
    with _client(live) as client:
        first = client.responses.create(model=MODEL, input="weather in Oslo?", tools=WEATHER)
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "weather"
        assert orjson.loads(calls[0].arguments) == {"city": "Oslo"}
        second = client.responses.create(
            model=MODEL,
            tools=WEATHER,
            input=[
                {"role": "user", "content": "weather in Oslo?"},
                {
                    "type": "function_call",
                    "call_id": calls[0].call_id,
                    "name": "weather",
                    "arguments": calls[0].arguments,
                },
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "rain"},
            ],
        )
    assert "rain" in second.output_text


def test_previous_response_id_continues_and_answers_only_its_namespace(live, fake_upstream):
    fake_upstream.configure(tool_calls=[{"name": "weather", "input": {"city": "Oslo"}}])
    with _client(live) as client, _client(live, CLIENT_KEYS[1]) as other:
        first = client.responses.create(model=MODEL, input="weather?", tools=WEATHER)
        (call,) = [item for item in first.output if item.type == "function_call"]
        second = client.responses.create(
            model=MODEL,
            tools=WEATHER,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        )
        assert "sunny" in second.output_text
        assert client.responses.retrieve(first.id).output[-1].type == "function_call"
        with pytest.raises(openai.NotFoundError) as caught:
            other.responses.retrieve(first.id)
        assert caught.value.status_code == 404
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=MODEL, input="x", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_" + "0" * 48)


def test_store_false_keeps_nothing(live):
    with _client(live) as client:
        response = client.responses.create(model=MODEL, input="forget me", store=False)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)


def test_stream_events_arrive_in_order(live, fake_upstream):
    fake_upstream.configure(tool_calls=[{"name": "weather", "input": {"city": 'Z"ü'}}])
    with _client(live) as client:
        events = list(
            client.responses.create(model=MODEL, input="stream", tools=WEATHER, stream=True)
        )
        kinds = [event.type for event in events]
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert "response.output_text.delta" in kinds
        text_done = kinds.index("response.output_text.done")
        assert kinds[text_done + 1 : text_done + 3] == [
            "response.content_part.done",
            "response.output_item.done",
        ]
        arguments = "".join(
            event.delta
            for event in events
            if event.type == "response.function_call_arguments.delta"
        )
        assert arguments == orjson.dumps({"city": 'Z"ü'}).decode()
        assert kinds[-3:] == [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        completed = events[-1]
        assert completed.type == "response.completed"
        stored = client.responses.retrieve(completed.response.id)
        assert [item.type for item in stored.output] == ["message", "function_call"]


@pytest.mark.parametrize("tool", ["web_search", "file_search", "code_interpreter"])
def test_built_in_tools_are_refused_by_name(live, fake_upstream, tool):
    with _client(live) as client, pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[{"type": tool}])
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    assert tool in caught.value.message
    assert fake_upstream.stats()["requests"] == 0


@pytest.mark.parametrize(
    "options",
    [{}, {"temperature": 0.7, "max_output_tokens": 300}],
    ids=["options-empty", "with-options"],
)
async def test_n8n_responses_body_as_observed(live, options):
    """n8n 1.123's OpenAI Chat Model node with "Use Responses API" on."""
    body = {
        **options,
        "input": [
            {"type": "message", "role": "system", "content": "You are a helpful assistant"},
            {"type": "message", "role": "user", "content": "Hello"},
        ],
        "model": MODEL,
        "stream": False,
        "text": {},
    }
    headers = {"authorization": f"Bearer {CLIENT_KEYS[0]}"}
    async with aiohttp.ClientSession() as session:
        url = f"{live.url}/v1/responses"
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            assert response.status == 200
            answer = await response.json()
    assert answer["output"][0]["content"][0]["text"].startswith("Echo: Hello")


async def test_a_record_expires_with_its_ttl():
    now = [1000.0]
    cache = TieredCache(MemoryTier(max_bytes=1 << 20, clock=lambda: now[0]))
    store = ResponseStore(cache, ttl=60)
    response_id = store.new_id()
    await store.save("ns", response_id, {"answer": {"content": []}}, shared=False)
    assert await store.load("ns", response_id) is not None
    assert await store.load("other", response_id) is None
    now[0] += 61
    assert await store.load("ns", response_id) is None


def test_a_stream_failure_midway_is_an_error_event_then_failed(live, fake_upstream):
    fake_upstream.configure(stream_chunks=4, stream_error_after=2)
    with _client(live) as client:
        kinds = [
            event.type for event in client.responses.create(model=MODEL, input="x", stream=True)
        ]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
