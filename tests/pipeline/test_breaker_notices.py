"""Two gateways on one real Redis share the breaker by notices: requests send no breaker
command while its state holds (the server's MONITOR feed says so), an opening on one
reaches the other before anybody asks it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp

from tests.pipeline.shared import shared_gateway
from tests.redis_monitor import CommandLog, breaker_resynced


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


async def _post(session: aiohttp.ClientSession, url: str, text: str) -> int:
    async with session.post(f"{url}/v1/messages", json=_body(text)) as response:
        await response.read()
        return response.status


async def _breaker(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/api/health") as response:
        state: str = (await response.json())["breaker"]["state"]
        return state


async def test_requests_send_no_breaker_command_and_an_opening_reaches_the_other(
    gateway_factory, fake_upstream, redis_server
):
    gateways = [
        shared_gateway(
            gateway_factory, fake_upstream.url, redis_server.url, circuit_failure_threshold=3
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 5.0
    while not all(breaker_resynced(gateway) for gateway in gateways):
        assert time.monotonic() < deadline, "the breakers never read their shared state"
        await asyncio.sleep(0.02)
    a, b = (gateway.url for gateway in gateways)
    prefix = "promptrelay:breaker:" + hashlib.sha256(fake_upstream.url.encode()).hexdigest()[:12]
    async with aiohttp.ClientSession() as session:
        with CommandLog(redis_server.port) as closed:
            for index in range(20):  # misses: each an upstream attempt through the breaker
                assert await _post(session, a, f"a {index}") == 200
                assert await _post(session, b, f"b {index}") == 200
        assert closed.touching("pr:"), "the cache's own commands are in the log"
        assert closed.touching(prefix) == []  # 40 attempts, not one breaker command

        fake_upstream.configure(fail_next=3, fail_next_status=500)
        for index in range(3):
            assert await _post(session, a, f"failing {index}") == 500
        deadline = time.monotonic() + 3.0
        while await _breaker(session, b) != "open":  # told, not asked
            assert time.monotonic() < deadline, "the opening never reached b"
            await asyncio.sleep(0.02)
        sent = fake_upstream.stats()["by_path"]["/v1/messages"]
        with CommandLog(redis_server.port) as refusing:
            for index in range(20):
                assert await _post(session, b, f"refused {index}") == 503
        assert refusing.touching(prefix) == []
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == sent
