"""MAX_FREE_SOCKETS: idle keep-alive connections beyond the bound close when released."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.cache.conftest import eventually

GATEWAY_KEY = "sk-gateway-secret"


def _body(text: str) -> dict[str, object]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


async def _post(session: aiohttp.ClientSession, url: str, text: str) -> int:
    # no-store: every call goes upstream (no hit, no coalescing)
    headers = {"cache-control": "no-store"}
    async with session.post(f"{url}/v1/messages", json=_body(text), headers=headers) as r:
        await r.read()
        return r.status


async def test_a_burst_leaves_at_most_max_free_sockets_open_and_they_are_reused(
    gateway_factory, fake_upstream
):
    gateway = gateway_factory(
        anthropic_api_key=GATEWAY_KEY,
        anthropic_base_url=fake_upstream.url,
        max_sockets=20,
        max_free_sockets=2,
    )
    fake_upstream.configure(latency_ms=500)  # the 20 calls overlap upstream
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = await asyncio.gather(
            *(_post(session, gateway.url, f"burst {i}") for i in range(20))
        )
        assert statuses == [200] * 20
        assert fake_upstream.stats()["connections_total"] > 2  # more than the idle bound

        await eventually(lambda: fake_upstream.stats()["connections_open"] <= 2, timeout=5)
        async with session.get(f"{gateway.url}/api/health") as r:
            pool = (await r.json())["upstream"]["pool"]
        assert pool["idle"] <= 2 and pool["in_use"] == 0
        opened = fake_upstream.stats()["connections_total"]  # health's reachability probe too

        fake_upstream.configure(latency_ms=0)
        for i in range(5):
            assert await _post(session, gateway.url, f"after {i}") == 200
    stats = fake_upstream.stats()
    assert stats["connections_total"] == opened  # the sequential calls reused the kept ones
    assert stats["connections_open"] <= 2
