"""Telemetry end to end: a real gateway (uvicorn), the fake upstream over HTTP, a real
webhook receiver (aiohttp server in the test), a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from promptrelay.resilience.backoff import Backoff
from tests.fixtures_redis import free_port

INTERVAL = 0.2  # TELEMETRY_INTERVAL in these tests


class Receiver:
    """A webhook endpoint that records every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.fail_next = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        self.bodies.append(await request.json())
        return web.Response(text="ok")

    def of(self, key: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["key"] == key and (kind is None or b["kind"] == kind)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hook.port).start()
    yield hook
    await runner.cleanup()


def live(fake_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_api_key": "k",
        "anthropic_base_url": fake_url,
        "telemetry_interval": INTERVAL,
        **extra,
    }


def body(prompt: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": prompt}],
    }


async def send(session: aiohttp.ClientSession, url: str, prompt: str) -> int:
    data = orjson.dumps(body(prompt))
    headers = {"content-type": "application/json"}
    async with session.post(f"{url}/v1/messages", data=data, headers=headers) as response:
        await response.read()
        return response.status


async def wait_for(check: Callable[[], Any], timeout: float, step: float = 0.05) -> float:
    """Poll until check() is truthy; return the seconds it took (fails after timeout)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_error_rate_alert_reaches_the_webhook_once_then_resolves(
    gateway_factory, fake_upstream, receiver
):
    fake_upstream.configure(fail_status=500, fail_rate=1.0)
    gw = gateway_factory(
        **live(
            fake_upstream.url,
            upstream_retries=0,
            circuit_failure_threshold=1000,
            alert_webhook_url=receiver.url,
            alert_error_window=2.0,
            alert_min_requests=5,
            alert_cooldown=60,
        )
    )
    async with aiohttp.ClientSession() as session:
        statuses = [await send(session, gw.url, f"fail {i}") for i in range(8)]
        assert statuses == [500] * 8
        failed_at = time.monotonic()
        await wait_for(lambda: receiver.of("error_rate", "firing"), timeout=5)
        took = time.monotonic() - failed_at
        # one sampling period, plus generous slack for a shared machine
        assert took < INTERVAL + 2.0
        (firing,) = receiver.of("error_rate", "firing")
        assert firing["severity"] == "critical"  # 100 % of requests failed
        assert firing["value"] == 1.0 and firing["threshold"] == 0.1
        assert firing["source"] == "promptrelay"
        # it keeps failing for many periods: no repeat
        for i in range(10):
            assert await send(session, gw.url, f"still failing {i}") == 500
            await asyncio.sleep(INTERVAL / 2)
        assert len(receiver.of("error_rate")) == 1

        fake_upstream.configure(fail_rate=0.0)
        recovered_at = time.monotonic()

        async def keep_succeeding() -> None:
            n = 0
            while not receiver.of("error_rate", "resolved"):
                assert await send(session, gw.url, f"ok {n}") == 200
                n += 1
                await asyncio.sleep(0.05)

        await asyncio.wait_for(keep_succeeding(), timeout=15)
        # the failures left the 2 s window
        assert time.monotonic() - recovered_at >= 1.0
        (resolved,) = receiver.of("error_rate", "resolved")
        assert resolved["kind"] == "resolved"

        # failing again inside the cooldown: active, but not delivered again
        fake_upstream.configure(fail_rate=1.0)
        for i in range(8):
            assert await send(session, gw.url, f"again {i}") == 500
        telemetry = gw.app.runtime.telemetry
        await wait_for(
            lambda: any(a["key"] == "error_rate" for a in telemetry.alerts.active()), timeout=5
        )
        await asyncio.sleep(3 * INTERVAL)
        assert len(receiver.of("error_rate", "firing")) == 1

        alerts = await get_json(session, f"{gw.url}/api/alerts")
        assert [a["key"] for a in alerts["active"]] == ["error_rate"]
        kinds = [n["kind"] for n in alerts["recent"] if n["key"] == "error_rate"]
        assert kinds == ["resolved", "firing"]  # newest first
        assert alerts["webhook"]["sent"] >= 2 and alerts["webhook"]["configured"] is True
        assert receiver.url not in orjson.dumps(alerts).decode()


async def test_webhook_is_retried(gateway_factory, fake_upstream, receiver):
    receiver.fail_next = 2
    gw = gateway_factory(**live(fake_upstream.url, alert_webhook_url=receiver.url))
    gw.app.runtime.telemetry.delivery.backoff = Backoff(base=0.05, factor=2.0, cap=0.2)
    loop = gw.app.runtime.telemetry.loop
    loop.call_soon_threadsafe(time.sleep, 0.4)  # a loop-lag alert to deliver
    await wait_for(lambda: receiver.of("loop_lag", "firing"), timeout=5)
    assert receiver.fail_next == 0  # two refusals, then the third try landed


async def test_blocking_the_loop_raises_a_loop_lag_alert(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url, alert_loop_lag_ms=100))
    telemetry = gw.app.runtime.telemetry
    async with aiohttp.ClientSession() as session:
        await wait_for(lambda: telemetry.samples >= 2, timeout=5)
        alerts = await get_json(session, f"{gw.url}/api/alerts")
        assert not [n for n in alerts["recent"] if n["key"] == "loop_lag"]
        # test-only hook: block the gateway's event loop from this thread
        telemetry.loop.call_soon_threadsafe(time.sleep, 0.5)
        await wait_for(lambda: any(n.key == "loop_lag" for n in telemetry.alerts.recent), 5)
        alerts = await get_json(session, f"{gw.url}/api/alerts")
        (notice,) = [n for n in alerts["recent"] if n["key"] == "loop_lag"][-1:]
        assert notice["value"] >= 300  # ms; the block was 500 ms
        assert notice["severity"] in ("medium", "high")


async def test_memory_guard_trims_and_collects_while_serving(gateway_factory, fake_upstream):
    limit = 1 << 20  # RSS is far past GC_THRESHOLD (and the critical level) of 1 MiB
    gw = gateway_factory(**live(fake_upstream.url, memory_limit_bytes=limit, gc_min_interval=0.3))
    runtime = gw.app.runtime
    stats = runtime.telemetry.stats
    async with aiohttp.ClientSession() as session:
        statuses = [await send(session, gw.url, f"fill {i}") for i in range(30)]
        assert statuses == [200] * 30
        await wait_for(lambda: stats.guard_freed_bytes > 0, timeout=5)
        collects = stats.guard_actions.get("collect", 0)
        statuses = [await send(session, gw.url, f"during {i}") for i in range(10)]
        await wait_for(lambda: stats.guard_actions.get("collect", 0) > collects, timeout=5)
        assert statuses == [200] * 10  # the service keeps answering
        perf = await get_json(session, f"{gw.url}/api/performance")
        metrics = await (await session.get(f"{gw.url}/metrics")).text()
    assert len(runtime.cache.memory) < 40  # the memory tier was trimmed
    guard = perf["memory_guard"]
    assert guard["actions"]["trim"] >= 1 and guard["actions"]["collect"] >= 1
    assert guard["actions"]["aggressive_on"] == 1 and guard["aggressive"] is True
    assert guard["freed_bytes"] > 0
    assert perf["system"]["memory_limit_bytes"] == limit
    assert perf["system"]["memory_limit_source"] == "setting"
    assert any(a["key"] == "memory" for a in perf["alerts"]["active"])
    assert any(r["area"] == "memory" for r in perf["recommendations"])
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    actions = {
        s.labels["action"]: s.value
        for s in families["promptrelay_memory_guard_actions"].samples
        if s.name.endswith("_total")
    }
    assert actions["collect"] >= 1 and actions["trim"] >= 1


async def test_metrics_parse_and_count(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url))
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            assert await send(session, gw.url, f"m {i}") == 200
        for i in range(3):
            assert await send(session, gw.url, f"m {i}") == 200  # hits
        await wait_for(lambda: gw.app.runtime.telemetry.samples >= 1, timeout=5)
        async with session.get(f"{gw.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain")
            text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "promptrelay_requests",
        "promptrelay_request_duration_seconds",
        "promptrelay_cache_lookups",
        "promptrelay_upstream_requests",
        "promptrelay_upstream_duration_seconds",
        "promptrelay_breaker_open",
        "promptrelay_breaker_transitions",
        "promptrelay_process_resident_memory_bytes",
        "promptrelay_event_loop_lag_seconds",
        "promptrelay_gc_collections",
    ):
        assert name in families, name
    assert all(name.startswith("promptrelay_") for name in families)

    def total(family: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name.endswith("_total") and labels.items() <= s.labels.items()
        )

    assert total("promptrelay_requests") == 8
    assert total("promptrelay_requests", cache="HIT", status="200") == 3
    assert total("promptrelay_cache_lookups", result="hit") == 3
    assert total("promptrelay_upstream_requests", status="200") == 5
    duration = families["promptrelay_request_duration_seconds"].samples
    count = sum(x.value for x in duration if x.name.endswith("_count"))
    infinite = sum(x.value for x in duration if x.labels.get("le") == "+Inf")
    under_a_minute = sum(x.value for x in duration if x.labels.get("le") == "60.3")
    assert count == infinite == under_a_minute == 8
    upstream = families["promptrelay_upstream_duration_seconds"].samples
    assert sum(x.value for x in upstream if x.name.endswith("_count")) == 5
    rss = families["promptrelay_process_resident_memory_bytes"].samples[0].value
    assert rss > 10 * 2**20
    assert "k" not in {s.labels.get("route") for f in families.values() for s in f.samples}


async def test_performance_shape_and_window(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url))
    async with aiohttp.ClientSession() as session:
        for i in range(4):
            assert await send(session, gw.url, f"p {i % 2}") == 200
        async with session.post(
            f"{gw.url}/api/generate", json={"prompt": "hello", "max_tokens": 5}
        ) as response:
            assert response.status == 200
        await wait_for(lambda: gw.app.runtime.telemetry.samples >= 2, timeout=5)
        perf = await get_json(session, f"{gw.url}/api/performance?window=15m")
        async with session.get(f"{gw.url}/api/performance?window=3w") as response:
            assert response.status == 400
            error = await response.json()
    assert error["error"]["type"] == "invalid_request_error"
    assert "window" in error["error"]["message"]
    for section in ("system", "requests", "cache", "upstream", "breaker", "batching", "history"):
        assert section in perf, section
    assert {"alerts", "recommendations", "memory_guard"} <= perf.keys()
    requests = perf["requests"]
    assert requests["total"] == 5
    assert set(requests["by_route"]) == {"/v1/messages", "/api/generate"}
    assert requests["by_cache"]["HIT"]["count"] == 2
    assert requests["bytes"]["request"] > 0 and requests["bytes"]["response"] > 0
    assert requests["in_flight"] == {"requests": 0, "request_bytes": 0}
    assert perf["cache"]["hits"] == 2 and perf["cache"]["misses"] == 3
    assert perf["upstream"]["latency"]["count"] == 3
    assert perf["upstream"]["pool"]["limit"] == 50
    assert perf["breaker"]["state"] == "closed"
    assert perf["history"]["resolution_s"] == 10.0 and perf["history"]["points"]
    assert perf["system"]["rss_bytes"] > 0 and perf["system"]["open_fds"] > 0


async def test_in_flight_bytes_are_counted_while_waiting(gateway_factory, fake_upstream):
    fake_upstream.configure(latency_ms=600)
    gw = gateway_factory(**live(fake_upstream.url))
    hot = gw.app.runtime.hot
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(send(session, gw.url, "slow one"))
        await wait_for(lambda: hot.in_flight == 1, timeout=5)
        assert hot.in_flight_bytes == len(orjson.dumps(body("slow one")))
        assert await pending == 200
    assert (hot.in_flight, hot.in_flight_bytes) == (0, 0)


async def test_admin_rule_guards_alerts(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url, admin_api_key="adm"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/alerts") as response:
            assert response.status == 401
        headers = {"authorization": "Bearer adm"}
        async with session.get(f"{gw.url}/api/alerts", headers=headers) as response:
            assert response.status == 200


async def test_performance_follows_the_admin_rule(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url, admin_api_key="adm"))
    url = f"{gw.url}/api/performance"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
            async with session.get(url, headers=headers) as response:
                assert response.status == 401, headers
                error = (await response.json())["error"]
                assert error["type"] == "authentication_error"
        async with session.get(url, headers={"authorization": "Bearer adm"}) as response:
            assert response.status == 200
            assert "requests" in await response.json()


async def test_metrics_are_open_unless_a_metrics_token_is_set(gateway_factory, fake_upstream):
    open_gw = gateway_factory(**live(fake_upstream.url, admin_api_key="adm"))
    closed = gateway_factory(**live(fake_upstream.url, admin_api_key="adm", metrics_token="tok"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{open_gw.url}/metrics") as response:
            assert response.status == 200  # the admin key does not close it
        refused: tuple[dict[str, str], ...] = (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "Bearer adm"},  # an admin key is not the scraper's token
            {"authorization": "Basic tok"},
            {"x-api-key": "tok"},
        )
        for headers in refused:
            async with session.get(f"{closed.url}/metrics", headers=headers) as response:
                assert response.status == 401, headers
                error = (await response.json())["error"]
                assert error["type"] == "authentication_error"
                assert "tok" not in error["message"]
        headers = {"authorization": "Bearer tok"}
        async with session.get(f"{closed.url}/metrics", headers=headers) as response:
            assert response.status == 200
            assert "promptrelay_requests" in await response.text()


async def test_telemetry_disabled(gateway_factory, fake_upstream):
    gw = gateway_factory(**live(fake_upstream.url, telemetry_enabled=False))
    assert gw.app.runtime.telemetry is None
    async with aiohttp.ClientSession() as session:
        assert await send(session, gw.url, "works without telemetry") == 200
        for path in ("/api/performance", "/metrics", "/api/alerts"):
            async with session.get(f"{gw.url}{path}") as response:
                assert response.status == 404
                assert "TELEMETRY_ENABLED" in (await response.json())["error"]["message"]


async def test_redis_snapshots_and_alerts_delivered_once_across_processes(
    gateway_factory, fake_upstream, redis_server, receiver
):
    import redis.asyncio as aioredis

    settings = live(
        fake_upstream.url,
        redis_enabled=True,
        redis_url=redis_server.url,
        alert_webhook_url=receiver.url,
    )
    first, second = gateway_factory(**settings), gateway_factory(**settings)
    telemetries = [first.app.runtime.telemetry, second.app.runtime.telemetry]
    await wait_for(lambda: all(t.samples >= 1 for t in telemetries), timeout=5)
    # both processes see the same condition; only one delivers
    for gw in (first, second):
        gw.app.runtime.telemetry.loop.call_soon_threadsafe(time.sleep, 0.4)
    await wait_for(lambda: receiver.of("loop_lag", "firing"), timeout=5)
    await asyncio.sleep(4 * INTERVAL)
    assert len(receiver.of("loop_lag", "firing")) == 1
    client = aioredis.from_url(redis_server.url)
    try:
        keys = sorted(await client.keys("promptrelay:telemetry:process:*"))
        assert len(keys) == 1  # both gateways live in this one test process (same pid)
        assert 0 < await client.ttl(keys[0]) <= 60
        raw = await client.get(keys[0])
        assert raw is not None
        stored = orjson.loads(raw)
        assert stored["system"]["rss_bytes"] > 0
    finally:
        await client.aclose()
    async with aiohttp.ClientSession() as session:
        perf = await get_json(session, f"{first.url}/api/performance")
    assert perf["processes"] and perf["processes"][0]["process"] == stored["process"]
