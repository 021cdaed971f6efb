"""Bad input gets a clear 4xx in Anthropic's error shape, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

VALID = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}'


@pytest.fixture
def gateway(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, max_body_bytes=4096
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            b'{"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}',
            "max_tokens",
        ),
        (b'{"model": "m", "max_tokens": 5, "messages": []}', "messages"),
        (
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}',
            "messages.0.role",
        ),
        (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}', "messages.0.content"),
        (
            b'{"model": "m", "max_tokens": 5, "stream": "yes", "messages": '
            b'[{"role": "user", "content": "x"}]}',
            "stream",
        ),
        (VALID[:-1] + b', "api_base": "http://elsewhere"}', "api_base"),
        (VALID[:-1] + b', "base_url": "http://elsewhere"}', "base_url"),
    ],
)
async def test_messages_bad_input(gateway, fake_upstream, body, needle):
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{gateway.url}/v1/messages", data=body, headers={"content-type": "application/json"}
        )
        payload = await response.json()
    assert response.status == 400
    assert payload == {"type": "error", "error": payload["error"]}
    assert payload["error"]["type"] == "invalid_request_error"
    assert needle in payload["error"]["message"]
    assert fake_upstream.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "exactly one of prompt, messages or template"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "temperature": "hot"}, "temperature"),
        ({"prompt": "a", "cache": "no"}, "cache"),
        ({"prompt": "a", "surprise": 1}, "surprise"),
    ],
)
async def test_generate_bad_input(gateway, body, needle):
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/api/generate", json=body)
        payload = await response.json()
    assert response.status == 400
    assert payload["error"]["type"] == "invalid_request_error"
    assert needle in payload["error"]["message"]


async def test_unknown_fields_pass_through(gateway, fake_upstream):
    body = VALID[:-1] + b', "some_future_field": {"on": true}}'
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/v1/messages", data=body)
        assert response.status == 200
    assert fake_upstream.stats()["requests"] == 1


async def test_oversized_body_is_refused_before_it_is_read(gateway):
    async with aiohttp.ClientSession() as session:
        declared = await session.post(f"{gateway.url}/v1/messages", data=b"x" * 10_000)
        assert declared.status == 413
        assert (await declared.json())["error"]["type"] == "request_too_large"

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 1000

        streamed = await session.post(f"{gateway.url}/v1/messages", data=chunked())
        assert streamed.status == 413


async def test_unknown_route_and_method_use_the_error_envelope(gateway):
    async with aiohttp.ClientSession() as session:
        missing = await session.get(f"{gateway.url}/api/nothing-here")
        assert missing.status == 404
        assert (await missing.json())["error"]["type"] == "not_found_error"
        wrong_method = await session.get(f"{gateway.url}/v1/messages")
        assert wrong_method.status == 404
        assert (await wrong_method.json())["type"] == "error"
