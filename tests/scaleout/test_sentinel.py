"""promptrelay on a Sentinel-managed Redis: shared cache, and a failover fails no request."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import redis

from tests.fixtures_topologies import SentinelSet
from tests.scaleout.helpers import all_up, ask, health, load, sentinel_settings, until

PROMPTS = [f"sentinel prompt {index}" for index in range(12)]


def _keys(server: Any) -> list[bytes]:
    # A client, not server.command(): that reads one chunk only, and after the load the
    # reply holds more keys than fit in it.
    with redis.Redis("127.0.0.1", server.port, protocol=2, socket_timeout=2.0) as client:
        return list(client.scan_iter(match="pr:*", count=1000))


async def test_master_killed_under_load_fails_no_request_and_writes_follow_the_failover(
    gateway_factory, fake_upstream, redis_sentinel: SentinelSet
):
    gateways = [
        gateway_factory(**sentinel_settings(redis_sentinel, fake_upstream.url)) for _ in range(2)
    ]
    urls = [gateway.url for gateway in gateways]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        assert await all_up(session, urls)
        assert await ask(session, urls[0], PROMPTS[0]) == (200, "MISS")
        old = redis_sentinel.master()
        assert await until(lambda: _async(bool(_keys(old))), 3.0)
        assert await ask(session, urls[1], PROMPTS[0]) == (200, "HIT")

        async def kill_soon() -> None:
            await asyncio.sleep(1.5)
            old.kill()

        statuses, _ = await asyncio.gather(
            load(session, urls, 5.0, workers=4, repeated=PROMPTS), kill_soon()
        )
        assert len(statuses) > 30 and statuses == [200] * len(statuses)
        new = await asyncio.to_thread(redis_sentinel.wait_failover, old)

        async def both_up() -> bool:
            states = [(await health(session, url))["redis"] for url in urls]
            return states == ["up", "up"]

        assert await until(both_up, 15.0)
        before = set(_keys(new))
        assert await ask(session, urls[0], "written after the failover") == (200, "MISS")
        assert await until(lambda: _async(len(set(_keys(new)) - before) == 1), 5.0)


async def _async(value: bool) -> bool:
    return value
