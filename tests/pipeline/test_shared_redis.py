"""Several promptrelay servers on one Redis share answers and clears; Redis loss is no error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.pipeline.shared import shared_gateway

ADMIN_WRITE = {"x-promptrelay-admin": "1"}  # admin writes need a header forms cannot send


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
    }


async def _until(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_answer_cached_by_one_server_is_a_hit_on_another(
    gateway_factory, fake_upstream, redis_server
):
    one = shared_gateway(gateway_factory, fake_upstream.url, redis_server.url)
    two = shared_gateway(gateway_factory, fake_upstream.url, redis_server.url)
    async with aiohttp.ClientSession() as session:
        first = await session.post(f"{one.url}/v1/messages", json=_body("shared"))
        assert first.headers["x-cache"] == "MISS"
        await first.read()

        async def in_redis() -> bool:  # writes to Redis happen behind the answer
            return b"pr:" in redis_server.command("KEYS", "pr:*")

        assert await _until(in_redis, 3.0)
        second = await session.post(f"{two.url}/v1/messages", json=_body("shared"))
        await second.read()
        assert second.headers["x-cache"] == "HIT"
        # a clear on one server empties the other's memory tier too
        cleared = await session.post(f"{one.url}/api/cache/clear", headers=ADMIN_WRITE)
        assert (await cleared.json())["removed"] >= 1

        async def two_forgot() -> bool:
            runtime = two.app.runtime
            return runtime is not None and len(runtime.cache.memory) == 0

        assert await _until(two_forgot, 2.0)
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_killing_redis_under_load_fails_no_request(
    gateway_factory, fake_upstream, redis_server
):
    gateway = shared_gateway(gateway_factory, fake_upstream.url, redis_server.url)
    fake_upstream.configure(latency_ms=20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(index: int) -> int:
            body = _body(f"load {index % 50}")
            async with session.post(f"{gateway.url}/v1/messages", json=body) as response:
                await response.read()
                return response.status

        load = asyncio.gather(*(one(i) for i in range(200)))
        await asyncio.sleep(0.05)
        redis_server.kill()
        statuses = await load
        assert statuses == [200] * 200

        async def health_redis() -> str:
            payload = await (await session.get(f"{gateway.url}/api/health")).json()
            return str(payload["redis"])

        assert await _until(lambda: _is(health_redis, "down"), 3.0)
        redis_server.restart()
        assert await _until(lambda: _is(health_redis, "up"), 5.0)


async def _is(read: Any, expected: str) -> bool:
    return bool(await read() == expected)


async def test_frozen_redis_delays_no_request_beyond_the_socket_timeout(
    gateway_factory, fake_upstream, redis_server
):
    gateway = shared_gateway(gateway_factory, fake_upstream.url, redis_server.url)
    timeout = gateway.settings.redis_socket_timeout
    bound = 2 * timeout + 0.1
    async with aiohttp.ClientSession() as session:
        warm = await session.post(f"{gateway.url}/v1/messages", json=_body("before"))
        await warm.read()
        redis_server.stop_signal()
        try:
            durations = []
            for index in range(30):
                started = time.monotonic()
                response = await session.post(
                    f"{gateway.url}/v1/messages", json=_body(f"frozen {index % 5}")
                )
                await response.read()
                durations.append(time.monotonic() - started)
                assert response.status == 200
        finally:
            redis_server.cont_signal()
    assert max(durations) <= bound, durations
