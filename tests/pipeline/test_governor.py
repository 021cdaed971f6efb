"""The governor against the fake upstream's token buckets, over real HTTP.

Buckets are small and refill fast so a burst of 300 takes seconds, not minutes; the
assertions count statuses, never durations.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

BURST = 300


def _body(i: int) -> dict[str, Any]:
    # Mixed sizes: 3 to ~750 input tokens by the fake's count (characters / 4).
    text = f"request {i} " + "x" * (i * 37 % 3000)
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


async def _burst(url: str, headers: dict[str, str], count: int = BURST) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            async with session.post(url, json=_body(i), headers=headers) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _limited(fake: Any) -> None:
    fake.configure(
        limit_requests=50,
        limit_requests_per_s=50.0,
        limit_input_tokens=20_000,
        limit_input_tokens_per_s=20_000.0,
    )


async def test_burst_through_promptrelay_meets_no_429_straight_burst_does(
    gateway_factory: Any, fake_upstream: Any
) -> None:
    _limited(fake_upstream)
    straight = await _burst(fake_upstream.url + "/v1/messages", {"x-api-key": "k"})
    assert straight.count(429) > BURST / 2
    fake_upstream.reset()

    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        upstream_retries=0,  # a 429 that got through would fail its request
        governor_max_wait=30,
    )
    statuses = await _burst(gateway.url + "/v1/messages", {})
    assert statuses == [200] * BURST
    stats = fake_upstream.stats()
    assert stats["by_status"] == {"200": BURST}
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/api/performance") as response:
            performance = await response.json()
        async with session.get(gateway.url + "/metrics") as response:
            metrics = await response.text()
    governor = performance["governor"]
    assert governor["queued_total"] > 0 and governor["upstream_429"] == 0
    assert any(r["area"] == "rate_limits" for r in performance["recommendations"])
    waited = next(
        line for line in metrics.splitlines() if line.startswith("promptrelay_governor_waited")
    )
    assert float(waited.split()[-1]) == governor["queued_total"]
    assert 'promptrelay_governor_remaining{dimension="requests"' in metrics
    (key,) = governor["keys"].values()
    assert key["learned"] and key["buckets"]["requests"]["limit"] == 50
    assert "gw" not in str(governor["keys"])


async def test_halved_bucket_is_followed_within_a_few_answers(
    gateway_factory: Any, fake_upstream: Any
) -> None:
    _limited(fake_upstream)
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        upstream_retries=3,
        governor_max_wait=30,
    )
    url = gateway.url + "/v1/messages"
    first = await _burst(url, {}, count=120)
    assert first == [200] * 120
    fake_upstream.configure(limit_requests=25, limit_requests_per_s=25.0)
    second = await _burst(url, {}, count=120)
    assert second == [200] * 120
    # Only what was already let go under the old view can meet the smaller bucket.
    assert fake_upstream.stats()["by_status"].get("429", 0) <= 5


async def test_two_instances_sharing_redis_stay_under_the_limit_together(
    gateway_factory: Any, fake_upstream: Any, redis_server: Any
) -> None:
    _limited(fake_upstream)
    gateways = [
        gateway_factory(
            anthropic_api_key="gw",
            anthropic_base_url=fake_upstream.url,
            upstream_retries=0,
            governor_max_wait=30,
            redis_enabled=True,
            redis_url=redis_server.url,
            # A slow answer on a busy machine must not mark Redis down mid-burst (then each
            # process would fall back to its own view): this test is about sharing.
            redis_socket_timeout=2.0,
        )
        for _ in range(2)
    ]
    for gateway in gateways:  # each counted the other by its start-up beat or the next
        runtime = gateway.app.runtime
        assert await _until(lambda r=runtime: r.governor.snapshot()["processes_sharing"] == 2)

    async def half(gateway: Any, offset: int) -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                body = _body(offset + i)
                async with session.post(gateway.url + "/v1/messages", json=body) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*(one(i) for i in range(BURST // 2))))

    first, second = await asyncio.gather(half(gateways[0], 0), half(gateways[1], BURST))
    snapshots = [g.app.runtime.governor.snapshot() for g in gateways]
    assert first + second == [200] * BURST, (fake_upstream.stats()["by_status"], snapshots)
    assert fake_upstream.stats()["by_status"] == {"200": BURST}


async def _until(predicate: Any, seconds: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False
