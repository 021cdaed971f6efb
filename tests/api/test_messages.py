"""POST /v1/messages through a real promptrelay server to the real fake upstream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

GATEWAY_KEY = "sk-gateway-secret"
CLIENT_KEY = "sk-client-own"


def _body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key=GATEWAY_KEY, anthropic_base_url=fake_upstream.url, upstream_retries=0
    )


def test_sdk_create_and_stream_give_the_same_text(live, fake_upstream):
    client = anthropic.Anthropic(base_url=live.url, api_key=CLIENT_KEY, max_retries=0)
    kwargs: Any = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "same question"}],
    }
    created = client.messages.create(**kwargs)
    deltas: list[str] = []
    fresh = {"cache-control": "no-cache"}  # past the cache: this test is about forwarding
    with client.messages.stream(**kwargs, extra_headers=fresh) as stream:
        deltas.extend(stream.text_stream)
        final = stream.get_final_message()
    first, last = created.content[0], final.content[0]
    assert first.type == "text" and last.type == "text"
    assert first.text
    assert "".join(deltas) == first.text
    assert last.text == first.text
    assert len(deltas) > 1
    stats = fake_upstream.stats()
    assert stats["by_path"]["/v1/messages"] == 2
    assert stats["api_keys_seen"] == [GATEWAY_KEY]
    client.close()


async def test_stream_is_forwarded_before_the_upstream_finishes(live, fake_upstream):
    fake_upstream.configure(stream_chunks=20, chunk_interval_ms=50)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(f"{live.url}/v1/messages", json=_body(stream=True)) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.content:
                if b"text_delta" in line:
                    first_delta = time.monotonic() - started
                    upstream_still_sending = fake_upstream.stats()["in_flight"]
                    break
            rest = await response.read()
        total = time.monotonic() - started
    assert upstream_still_sending == 1
    assert first_delta < total / 2
    assert b"message_stop" in rest


async def test_stream_forwards_ping_unknown_and_error_events(live, fake_upstream):
    fake_upstream.configure(stream_chunks=4, stream_error_after=2, extra_events=True)
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{live.url}/v1/messages", json=_body(stream=True))
        payload = await response.read()
    assert b"event: ping" in payload
    assert b"event: future_event_type" in payload
    assert b"event: error" in payload
    assert payload.count(b"text_delta") == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 500, 529])
async def test_upstream_errors_keep_status_type_and_retry_after(live, fake_upstream, status):
    expected = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }[status]
    fake_upstream.configure(fail_next=1, fail_next_status=status, retry_after=7)
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{live.url}/v1/messages", json=_body())
        payload = await response.json()
    assert response.status == status
    assert payload["type"] == "error"
    assert payload["error"]["type"] == expected
    assert response.headers["retry-after"] == "7"
    assert response.headers["request-id"]


async def test_sequential_requests_reuse_one_connection(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        for index in range(1000):
            response = await session.post(f"{live.url}/v1/messages", json=_body(f"q{index}"))
            assert response.status == 200
            await response.read()
    stats = fake_upstream.stats()
    assert stats["by_path"]["/v1/messages"] == 1000
    assert stats["connections_total"] == 1


async def test_concurrency_is_bounded_by_max_sockets(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        max_sockets=8,
        max_free_sockets=4,
    )
    fake_upstream.configure(latency_ms=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int) -> int:
            async with session.post(f"{gateway.url}/v1/messages", json=_body(f"c{index}")) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert statuses == [200] * 200
    stats = fake_upstream.stats()
    assert stats["max_in_flight"] == 8
    assert stats["connections_total"] <= 8


async def test_health_shows_calls_waiting_for_a_connection(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        max_sockets=2,
        max_free_sockets=2,
        governor_enabled=False,  # before the first answer it would hold back all but 4
    )
    fake_upstream.configure(latency_ms=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int) -> int:
            async with session.post(f"{gateway.url}/v1/messages", json=_body(f"w{index}")) as r:
                await r.read()
                return r.status

        calls = [asyncio.create_task(one(i)) for i in range(6)]
        await asyncio.sleep(0.3)
        async with session.get(f"{gateway.url}/api/health") as r:
            busy = (await r.json())["upstream"]["pool"]
        assert await asyncio.gather(*calls) == [200] * 6
        async with session.get(f"{gateway.url}/api/health") as r:
            quiet = (await r.json())["upstream"]["pool"]
    assert (busy["in_use"], busy["waiting"]) == (2, 4)
    assert (quiet["in_use"], quiet["waiting"], quiet["idle"]) == (0, 0, 2)
    assert quiet["connections_opened"] == 2
    assert quiet["requests"] == 6


async def test_n8n_anthropic_node_request_shape(live, fake_upstream):
    headers = {
        "x-api-key": "n8n-credential-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-stainless-lang": "js",
        "x-stainless-retry-count": "0",
        "accept-encoding": "gzip, deflate",
        "content-type": "application/json",
    }
    body = {
        "model": "claude-3-haiku-20240307",
        "temperature": 0.7,
        "stream": False,
        "max_tokens": 1,
        "thinking": {"type": "disabled"},
        "messages": [{"role": "user", "content": "credential test"}],
    }
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{live.url}/v1/messages", data=orjson.dumps(body), headers=headers
        )
        payload = await response.json()
    assert response.status == 200
    assert payload["type"] == "message"
    seen = fake_upstream.stats()["last_headers"]
    assert seen["x-api-key"] == GATEWAY_KEY
    assert seen["anthropic-version"] == "2023-06-01"
    assert seen["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert not any(name.startswith("x-stainless") for name in seen)


async def test_client_keys_are_required_when_configured(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        promptrelay_api_keys="team-a,team-b",
    )
    url = f"{gateway.url}/v1/messages"
    async with aiohttp.ClientSession() as session:
        missing = await session.post(url, json=_body())
        wrong = await session.post(url, json=_body(), headers={"x-api-key": "team-c"})
        bearer = await session.post(url, json=_body(), headers={"authorization": "Bearer team-b"})
        generate = await session.post(f"{gateway.url}/api/generate", json={"prompt": "hi"})
        for response in (missing, wrong, generate):
            assert response.status == 401
            payload = await response.json()
            assert payload["error"]["type"] == "authentication_error"
            assert "team-" not in payload["error"]["message"]
        assert bearer.status == 200
    assert fake_upstream.stats()["api_keys_seen"] == [GATEWAY_KEY]


async def test_client_key_passes_through_without_a_gateway_key(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_base_url=fake_upstream.url)
    async with aiohttp.ClientSession() as session:
        own = await session.post(
            f"{gateway.url}/v1/messages", json=_body(), headers={"x-api-key": CLIENT_KEY}
        )
        assert own.status == 200
        assert "x-promptrelay-provider" not in own.headers
        offline = await session.post(f"{gateway.url}/v1/messages", json=_body())
        assert offline.status == 200
        assert offline.headers["x-promptrelay-provider"] == "offline"
        message = await offline.json()
        assert "offline" in message["content"][0]["text"]
        health = await (await session.get(f"{gateway.url}/api/health")).json()
    assert fake_upstream.stats()["api_keys_seen"] == [CLIENT_KEY]
    assert health["served_by_key_mode"] == {"gateway_key": 0, "client_key": 1, "offline": 1}


async def test_other_v1_routes_pass_through(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        models = await session.get(f"{live.url}/v1/models")
        assert models.status == 200
        listing = await models.json()
        assert listing["data"] and listing["data"][0]["type"] == "model"
        one = await session.get(f"{live.url}/v1/models/{listing['data'][0]['id']}")
        assert one.status == 200
        count = await session.post(f"{live.url}/v1/messages/count_tokens", json=_body())
        assert count.status == 200
        assert (await count.json())["input_tokens"] > 0
        redirect = await session.post(
            f"{live.url}/v1/messages/count_tokens", json=_body(base_url="http://evil")
        )
        assert redirect.status == 400
    by_path = fake_upstream.stats()["by_path"]
    assert by_path["/v1/models"] == 1
    assert by_path["/v1/messages/count_tokens"] == 1
    assert fake_upstream.stats()["api_keys_seen"] == [GATEWAY_KEY]
