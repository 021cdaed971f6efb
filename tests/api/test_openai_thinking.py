"""Thinking with tools across turns: the client sends back only what LangChain sends (no
thinking), promptrelay puts Claude's signed thinking block back, the strict fake checks."""

from __future__ import annotations

from typing import Any

import openai
import pytest

GATEWAY_KEY = "sk-gateway-secret"
CLIENT_KEYS = ("sk-team-a", "sk-team-b")
MODEL = "claude-sonnet-4-6"
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture
def live(gateway_factory, fake_upstream):
    fake_upstream.configure(tool_calls=[{"name": "weather", "input": {"city": "Oslo"}}])
    return gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        upstream_retries=0,
        promptrelay_api_keys=",".join(CLIENT_KEYS),
    )


def _client(live: Any, key: str = CLIENT_KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def _first_turn(client: openai.OpenAI, stream: bool) -> list[dict[str, Any]]:
    question: Any = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        calls: dict[int, dict[str, Any]] = {}
        for chunk in client.chat.completions.create(
            model=MODEL, messages=question, tools=TOOLS, reasoning_effort="high", stream=True
        ):
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(call.index, {"id": call.id, "arguments": ""})
                assert call.function is not None
                entry["arguments"] += call.function.arguments or ""
        return [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": "weather", "arguments": call["arguments"]},
            }
            for call in calls.values()
        ]
    answer = client.chat.completions.create(
        model=MODEL, messages=question, tools=TOOLS, reasoning_effort="high"
    )
    message = answer.choices[0].message
    assert message.tool_calls and getattr(message, "reasoning_content", None)
    return [call.model_dump(include={"id", "type", "function"}) for call in message.tool_calls]


def _second_turn(calls: list[dict[str, Any]]) -> list[Any]:
    """What LangChain sends back: the tool calls and their results, no thinking."""
    return [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "tool_call_id": call["id"], "content": "rain"} for call in calls),
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_signed_thinking_block_is_put_back_before_the_tool_results(live, fake_upstream, stream):
    with _client(live) as client:
        calls = _first_turn(client, stream)
        answer = client.chat.completions.create(
            model=MODEL, messages=_second_turn(calls), tools=TOOLS, reasoning_effort="high"
        )
    assert "rain" in (answer.choices[0].message.content or "")
    assert fake_upstream.stats()["by_status"] == {"200": 2}


def test_another_namespace_gets_no_thinking_and_the_fake_refuses(live, fake_upstream):
    with _client(live) as client, _client(live, CLIENT_KEYS[1]) as other:
        calls = _first_turn(client, stream=False)
        with pytest.raises(openai.BadRequestError) as caught:
            other.chat.completions.create(
                model=MODEL, messages=_second_turn(calls), tools=TOOLS, reasoning_effort="high"
            )
    assert "thinking" in caught.value.message
    assert fake_upstream.stats()["by_status"] == {"200": 1, "400": 1}
