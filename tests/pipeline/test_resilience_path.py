"""Retries, the breaker, timeouts and stream coalescing, end to end against the fake."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def _post(url: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/messages", json=body) as response:
            return response.status, response.headers.copy(), await response.read()


async def test_429_retry_after_is_honoured_then_succeeds(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    fake_upstream.configure(fail_next=1, fail_next_status=429, retry_after=1)
    started = time.monotonic()
    status, _, _ = await _post(gateway.url, _body("rate limited"))
    assert status == 200
    assert time.monotonic() - started >= 1.0
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 2


async def test_400_is_never_retried(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    fake_upstream.configure(fail_next=5, fail_next_status=400)
    status, headers, _ = await _post(gateway.url, _body("bad"))
    assert status == 400
    assert "x-should-retry" not in headers
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_always_overloaded_costs_retries_plus_one_then_says_do_not_retry(
    gateway_factory, fake_upstream
):
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        upstream_retries=2,
        circuit_failure_threshold=50,
    )
    fake_upstream.configure(fail_status=529, fail_rate=1.0, retry_after=0)
    status, headers, body = await _post(gateway.url, _body("overloaded"))
    assert status == 529
    assert headers["x-should-retry"] == "false"
    assert b"overloaded_error" in body
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 3


async def test_hung_upstream_gives_504_within_the_budget(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, upstream_timeout=1.0
    )
    fake_upstream.configure(hang=True)
    started = time.monotonic()
    status, _, body = await _post(gateway.url, _body("hang"))
    assert status == 504
    assert b"timeout_error" in body
    assert time.monotonic() - started <= 1.0 + 0.5


async def test_breaker_opens_fails_fast_serves_hits_and_recovers(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        upstream_retries=0,
        circuit_failure_threshold=3,
        circuit_reset_timeout=1.0,
    )
    assert (await _post(gateway.url, _body("cached before")))[0] == 200
    fake_upstream.configure(fail_status=500, fail_rate=1.0)
    for index in range(3):
        assert (await _post(gateway.url, _body(f"fail {index}")))[0] == 500
    calls = fake_upstream.stats()["by_path"]["/v1/messages"]
    status, headers, body = await _post(gateway.url, _body("refused"))
    assert status == 503
    assert b"overloaded_error" in body and b"circuit" in body
    assert headers["retry-after"] == "1"
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == calls
    hit = await _post(gateway.url, _body("cached before"))
    assert hit[0] == 200 and hit[1]["x-cache"] == "HIT"
    fake_upstream.configure(fail_rate=0.0, fail_status=None)
    await asyncio.sleep(1.1)
    assert (await _post(gateway.url, _body("probe")))[0] == 200
    async with aiohttp.ClientSession() as session:
        health = await (await session.get(f"{gateway.url}/api/health")).json()
    assert health["breaker"]["state"] == "closed"


async def test_two_processes_sharing_redis_open_together(
    gateway_factory, fake_upstream, redis_server
):
    def start() -> Any:
        return gateway_factory(
            anthropic_api_key="gw",
            anthropic_base_url=fake_upstream.url,
            upstream_retries=0,
            circuit_failure_threshold=2,
            circuit_reset_timeout=30,
            redis_enabled=True,
            redis_url=redis_server.url,
        )

    one, two = start(), start()
    fake_upstream.configure(fail_status=500, fail_rate=1.0)
    for index in range(2):
        await _post(one.url, _body(f"x{index}"))
    calls = fake_upstream.stats()["by_path"]["/v1/messages"]
    status, _, body = await _post(two.url, _body("other process"))
    assert status == 503 and b"circuit" in body
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == calls


async def test_identical_streams_share_one_upstream_stream(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    fake_upstream.configure(stream_chunks=5, chunk_interval_ms=50)
    results = await asyncio.gather(
        *(_post(gateway.url, _body("stream together", stream=True)) for _ in range(20))
    )
    assert {status for status, _, _ in results} == {200}
    texts = {body.count(b"text_delta") for _, _, body in results}
    assert texts == {5}
    assert sum(1 for _, headers, _ in results if headers.get("x-coalesced") == "true") == 19
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_coalesced_failure_reaches_everyone_and_cancellations_spare_the_last(
    gateway_factory, fake_upstream
):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    runtime = gateway.app.runtime
    assert runtime is not None
    fake_upstream.configure(
        latency_ms=1000, fail_next=1, fail_next_status=400, fail_latency_ms=1000
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            async with session.post(f"{gateway.url}/v1/messages", json=_body("doomed")) as r:
                await r.read()
                return r.status

        failed = await asyncio.gather(*(one() for _ in range(100)))
    assert set(failed) == {400}
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1
    assert runtime.pipeline.in_flight() == 0

    tasks = [asyncio.create_task(_post(gateway.url, _body("patient"))) for _ in range(100)]
    await asyncio.sleep(0.5)
    for task in tasks[:99]:
        task.cancel()  # 99 clients hang up
    status, _, body = await tasks[99]
    await asyncio.gather(*tasks[:99], return_exceptions=True)
    assert status == 200 and b"patient" in body
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 2
    assert runtime.pipeline.in_flight() == 0
