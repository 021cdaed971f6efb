"""POST /v1/chat/completions with the official openai SDK, through a real promptrelay to
the real fake upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.rawhttp import raw_request

GATEWAY_KEY = "sk-gateway-secret"
MODEL = "claude-sonnet-4-6"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key=GATEWAY_KEY, anthropic_base_url=fake_upstream.url, upstream_retries=0
    )


@pytest.fixture
def client(live):
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key="sk-any", max_retries=0) as sdk:
        yield sdk


def test_text_answer_through_the_sdk(client, fake_upstream):
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    )
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content is not None and choice.message.content.startswith("Echo: hello")
    assert choice.finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert fake_upstream.stats()["by_path"] == {"/v1/messages": 1}


def test_image_data_url_reaches_the_upstream_as_a_base64_block(client):
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ],
    )
    content = answer.choices[0].message.content
    assert content is not None and '"media_type":"image/png"' in content  # echoed back


def test_multi_turn_with_tool_results(client):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain, 4 C"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    )
    content = answer.choices[0].message.content
    assert content is not None and "rain, 4 C" in content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_refused_fields_are_400s_naming_them(client, fake_upstream, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={field: value}
        )
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == field and field in error["message"]
    assert error["type"] == "invalid_request_error"
    assert fake_upstream.stats()["requests"] == 0


def test_no_op_values_and_unknown_fields_are_accepted(client):
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        n=1,
        logprobs=False,
        logit_bias={},
        modalities=["text"],
        seed=7,
        extra_body={"some_future_field": {"a": 1}},
    )


async def test_bad_json_and_upstream_errors_in_openai_shape(live, fake_upstream):
    url = f"{live.url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"{nope") as response:
            assert response.status == 400
            body = await response.json()
            assert set(body["error"]) == {"message", "type", "param", "code"}
        fake_upstream.configure(fail_next=1, fail_next_status=429, retry_after=7)
        good = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        async with session.post(url, json=good) as response:
            assert response.status == 429
            assert response.headers["retry-after"] == "7"
            assert (await response.json())["error"]["type"] == "rate_limit_error"


async def test_a_give_up_says_do_not_retry(gateway_factory):
    dead = gateway_factory(
        anthropic_api_key=GATEWAY_KEY, anthropic_base_url="http://127.0.0.1:9", upstream_retries=0
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{dead.url}/v1/chat/completions", json=body) as response:
            assert response.status == 502
            assert response.headers["x-should-retry"] == "false"
            assert (await response.json())["error"]["message"]


def test_offline_answers_the_labelled_offline_text(gateway_factory):
    offline = gateway_factory()
    with openai.OpenAI(base_url=f"{offline.url}/v1", api_key="unused", max_retries=0) as sdk:
        sdk_offline = sdk.with_options(default_headers={"authorization": ""})
        answer = sdk_offline.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    content = answer.choices[0].message.content
    assert content is not None and content.startswith("[offline]")


def test_an_openai_model_name_alias_reaches_claude(gateway_factory, fake_upstream, tmp_path: Path):
    providers = tmp_path / "providers.yaml"
    providers.write_text("aliases: {gpt-4o-mini: claude-haiku-4-5}\n")
    gateway = gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers),
    )
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        listed = [model.id for model in sdk.models.list()]
        one = sdk.models.retrieve("claude-sonnet-4-5")
    assert answer.model == "claude-haiku-4-5"
    assert "gpt-4o-mini" in listed and "claude-sonnet-4-5" in listed
    assert one.id == "claude-sonnet-4-5" and one.owned_by == "anthropic" and one.created > 0
    anthropic_sdk = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    assert "gpt-4o-mini" in [model.id for model in anthropic_sdk.models.list()]
    anthropic_sdk.close()


@pytest.mark.parametrize(
    "options",
    [{}, {"temperature": 0.7, "max_tokens": 300}],
    ids=["options-empty", "with-options"],
)
async def test_n8n_chat_body_as_observed(live, options):
    """n8n 1.123's OpenAI Chat Model node with "Use Responses API" off."""
    body: dict[str, Any] = {
        **options,
        "model": "claude-sonnet-4-6",
        "stream": False,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Hello"},
        ],
    }
    async with aiohttp.ClientSession() as session:
        url = f"{live.url}/v1/chat/completions"
        headers = {"authorization": "Bearer sk-n8n"}
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            assert response.status == 200
            answer = await response.json()
    assert answer["choices"][0]["message"]["content"].startswith("Echo: Hello")


async def test_an_openai_request_and_its_anthropic_twin_share_one_cache_entry(live, fake_upstream):
    openai_body = {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "text", "text": "share me"}]},
        ],
    }
    anthropic_body = {
        "model": MODEL,
        "max_tokens": 64,
        "system": "be brief",
        "messages": [{"role": "user", "content": "share me"}],
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{live.url}/v1/chat/completions", json=openai_body) as response:
            assert response.headers["x-cache"] == "MISS"
            text = (await response.json())["choices"][0]["message"]["content"]
        async with session.post(f"{live.url}/v1/messages", json=anthropic_body) as response:
            assert response.headers["x-cache"] == "HIT"
            assert (await response.json())["content"][0]["text"] == text
        async with session.post(f"{live.url}/v1/chat/completions", json=openai_body) as response:
            assert response.headers["x-cache"] == "HIT"
    assert fake_upstream.stats()["by_path"] == {"/v1/messages": 1}


def test_a_models_path_that_leaves_v1_is_refused(live, fake_upstream):
    for target in (b"/v1/models/%2e%2e/messages", b"/v1/models/a%2fb", b"/v1/models/%00"):
        assert raw_request(live.port, target).status == 400, target
    assert fake_upstream.stats()["requests"] == 0
