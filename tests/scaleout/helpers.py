"""Three promptrelay servers on one Redis topology, and the requests the tests send them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.fixtures_redis import free_port
from tests.fixtures_topologies import RedisClusterSet, SentinelSet

CLIENT_KEY = "client-key-5b2e9a"  # a client key that must never reach Redis
GATEWAY_KEY = "sk-ant-gateway-3c9f1e"  # the gateway's Anthropic key: never in Redis either


def cluster_settings(cluster: RedisClusterSet, fake_url: str, **extra: Any) -> dict[str, Any]:
    """Settings of a gateway on the cluster; the single-Redis port is dead, so a client
    that fell back to it would fail instead of quietly using another Redis."""
    return {
        "anthropic_api_key": GATEWAY_KEY,
        "anthropic_base_url": fake_url,
        "upstream_retries": 0,
        "redis_enabled": True,
        "redis_cluster_nodes": cluster.startup_nodes,
        "redis_password": cluster.password,
        "redis_port": free_port(),
        "promptrelay_api_keys": CLIENT_KEY,
        "telemetry_interval": 0.2,
        **extra,
    }


def sentinel_settings(sentinel: SentinelSet, fake_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_api_key": GATEWAY_KEY,
        "anthropic_base_url": fake_url,
        "upstream_retries": 0,
        "redis_enabled": True,
        "redis_sentinels": sentinel.sentinels,
        "redis_sentinel_master": sentinel.master_name,
        "redis_port": free_port(),
        "promptrelay_api_keys": CLIENT_KEY,
        **extra,
    }


def body(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


async def ask(session: aiohttp.ClientSession, url: str, text: str) -> tuple[int, str]:
    """POST one prompt; (status, X-Cache)."""
    headers = {"x-api-key": CLIENT_KEY}
    async with session.post(f"{url}/v1/messages", json=body(text), headers=headers) as reply:
        await reply.read()
        return reply.status, reply.headers.get("x-cache", "")


async def until(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/health") as reply:
        payload: dict[str, Any] = await reply.json()
        return payload


async def all_up(session: aiohttp.ClientSession, urls: list[str], seconds: float = 10.0) -> bool:
    """Until every gateway reports Redis up and its invalidation subscription active."""

    async def check() -> bool:
        for url in urls:
            if (await health(session, url))["redis"] != "up":
                return False
            async with session.get(f"{url}/api/cache/stats") as reply:
                stats = await reply.json()
            if stats["redis"]["subscriber"] != "subscribed":
                return False
        return True

    return await until(check, seconds)


async def load(
    session: aiohttp.ClientSession,
    urls: list[str],
    seconds: float,
    *,
    workers: int = 6,
    repeated: list[str] | None = None,
) -> list[int]:
    """Requests spread over ``urls`` for ``seconds``: half new prompts (misses that read and
    write Redis), half from ``repeated``. Every status answered, in order of completion."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        turn = 0
        while time.monotonic() < deadline:
            url = urls[(index + turn) % len(urls)]
            if repeated and turn % 2:
                text = repeated[(index * 7 + turn) % len(repeated)]
            else:
                text = f"load {index} {turn} {time.monotonic()}"
            try:
                status, _ = await ask(session, url, text)
            except aiohttp.ClientError:
                status = -1
            statuses.append(status)
            turn += 1

    await asyncio.gather(*(worker(index) for index in range(workers)))
    return statuses
