"""Three promptrelay servers on a 6-node Redis Cluster behave as one (issue acceptance)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
from redis.crc import key_slot

from promptrelay.resilience.backoff import Backoff
from tests.batch_jobs_client import poll, submit
from tests.fixtures_redis import RedisServer
from tests.fixtures_topologies import RedisClusterSet
from tests.redis_monitor import CommandLog, breaker_resynced
from tests.scaleout.helpers import (
    CLIENT_KEY,
    GATEWAY_KEY,
    all_up,
    ask,
    cluster_settings,
    health,
    load,
    until,
)
from tests.telemetry.test_service import Receiver, receiver  # noqa: F401  # the fixture

PROMPTS = [f"shared prompt {index}" for index in range(24)]


def _three(
    gateway_factory: Any, cluster: RedisClusterSet, fake_url: str, **extra: Any
) -> list[Any]:
    return [gateway_factory(**cluster_settings(cluster, fake_url, **extra)) for _ in range(3)]


async def _stored(cluster: RedisClusterSet, count: int) -> bool:
    return sum(len(keys) for keys in cluster.keys_by_primary("pr:*").values()) >= count


async def test_a_miss_on_one_is_a_hit_on_the_others_and_a_clear_reaches_all(
    gateway_factory, fake_upstream, redis_cluster
):
    gateways = _three(gateway_factory, redis_cluster, fake_upstream.url)
    a, b, c = (gateway.url for gateway in gateways)
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, [a, b, c])
        for text in PROMPTS:
            assert await ask(session, a, text) == (200, "MISS")
        assert await until(lambda: _stored(redis_cluster, len(PROMPTS)), 5.0)
        spread = redis_cluster.keys_by_primary("pr:*")
        assert sum(1 for keys in spread.values() if keys) >= 2, spread
        for url in (b, c):
            for text in PROMPTS:
                assert await ask(session, url, text) == (200, "HIT")
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == len(PROMPTS)

        async with session.post(f"{a}/api/cache/clear", json={}) as cleared:
            assert (await cleared.json())["removed"] >= len(PROMPTS)
        assert redis_cluster.keys_by_primary("pr:*") == {port: [] for port in spread}, (
            "SCAN + UNLINK must reach every primary"
        )

        async def others_forgot() -> bool:
            runtimes = [gateway.app.runtime for gateway in gateways[1:]]
            return all(len(runtime.cache.memory) == 0 for runtime in runtimes)

        assert await until(others_forgot, 3.0)
        # B's miss stores its answer again, so C asks another prompt.
        assert await ask(session, b, PROMPTS[0]) == (200, "MISS")
        assert await ask(session, c, PROMPTS[1]) == (200, "MISS")


async def _breakers(session: aiohttp.ClientSession, urls: list[str]) -> list[str]:
    return [(await health(session, url))["breaker"]["state"] for url in urls]


def _breaker_node(cluster: RedisClusterSet, fake_url: str) -> tuple[str, RedisServer]:
    """The breaker's key prefix (as app.py names it) and the primary holding its keys."""
    upstream = hashlib.sha256(fake_url.encode()).hexdigest()[:12]
    prefix = f"promptrelay:breaker:{upstream}"
    return prefix, cluster.primary_for_slot(key_slot(f"{prefix}:open".encode()))


async def test_failures_seen_by_one_open_the_breaker_everywhere_and_one_probe_is_sent(
    gateway_factory, fake_upstream, redis_cluster
):
    gateways = _three(
        gateway_factory,
        redis_cluster,
        fake_upstream.url,
        circuit_failure_threshold=3,
        circuit_reset_timeout=1.0,
    )
    urls = [gateway.url for gateway in gateways]
    a, b, c = urls
    prefix, node = _breaker_node(redis_cluster, fake_upstream.url)
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, urls)
        assert await until(lambda: _async(all(map(breaker_resynced, gateways))), 5.0)
        fake_upstream.configure(fail_next=3, fail_next_status=500)
        with CommandLog(node.port, redis_cluster.password) as failing:
            for index in range(3):
                assert (await ask(session, a, f"failing {index}"))[0] == 500
            # B and C open by A's notice, before anybody asks them anything.
            assert await until(lambda: _same(_breakers(session, urls), "open"), 3.0)
        # A's three attempts read nothing; its opening is one script: SET PX, then PUBLISH.
        assert [c.split()[0] for c in failing.touching(prefix)] == ["EVAL", "SET", "PUBLISH"]
        sent = fake_upstream.stats()["by_path"]["/v1/messages"]
        with CommandLog(node.port, redis_cluster.password) as refusing:
            for url in (b, c) * 10:
                assert (await ask(session, url, "refused at once"))[0] == 503
        assert refusing.touching(prefix) == []  # 20 refusals, not one breaker command
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == sent

        await asyncio.sleep(1.2)  # past the reset timeout: half-open everywhere
        fake_upstream.configure(latency_ms=400)  # the probe is in flight while others ask
        results = await asyncio.gather(*(ask(session, url, "probe") for url in urls))
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == sent + 1
        assert sorted(status for status, _ in results) == [200, 503, 503]
        # The probe's success closes the other two by its notice: no probe of their own.
        assert await until(lambda: _same(_breakers(session, urls), "closed"), 3.0)
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == sent + 1


async def _same(states: Awaitable[list[str]], state: str) -> bool:
    return set(await states) == {state}


async def test_an_alert_fires_once_for_the_three(
    gateway_factory,
    fake_upstream,
    redis_cluster,
    receiver: Receiver,  # noqa: F811
):
    # Generous Redis timeouts: a claim that times out on a starved machine falls back to
    # delivering, which is right for an outage but not what this test is about.
    gateways = _three(
        gateway_factory,
        redis_cluster,
        fake_upstream.url,
        alert_webhook_url=receiver.url,
        redis_socket_timeout=2.0,
        redis_connect_timeout=1.0,
    )
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, [gateway.url for gateway in gateways])
    telemetries = [gateway.app.runtime.telemetry for gateway in gateways]
    assert await until(lambda: _async(all(t.samples >= 1 for t in telemetries)), 5.0)
    for telemetry in telemetries:  # the same condition in all three: a stalled event loop
        telemetry.loop.call_soon_threadsafe(time.sleep, 0.4)
    assert await until(lambda: _async(bool(receiver.of("loop_lag", "firing"))), 5.0)
    await asyncio.sleep(1.0)
    assert len(receiver.of("loop_lag", "firing")) == 1


async def _async(value: bool) -> bool:
    return value


async def test_no_credential_reaches_any_key_or_value(
    gateway_factory, fake_upstream, redis_cluster
):
    fake_upstream.configure(batch_processing_ms=100)
    gateways = _three(gateway_factory, redis_cluster, fake_upstream.url)
    headers = {"x-api-key": CLIENT_KEY}
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, [gateway.url for gateway in gateways])
        for index, gateway in enumerate(gateways):
            assert (await ask(session, gateway.url, f"secret scan {index}"))[0] == 200
        waiting = [{"prompt": "secret scan waiting"}]
        fake_upstream.configure(batch_processing_ms=60_000)
        assert (await submit(session, gateways[0].url, waiting, headers))[0] == 202
        fake_upstream.configure(batch_processing_ms=100)
        _, job = await submit(session, gateways[0].url, [{"prompt": "secret scan job"}], headers)
        await poll(session, gateways[2].url, job["id"], headers)  # an ended job, too
        await asyncio.sleep(1.0)  # write-behind and a telemetry snapshot land
    items = redis_cluster.dump_all()
    assert any(key.startswith("pr:") for key, _ in items)
    assert sum(1 for key, _ in items if key.startswith("promptrelay:batch:")) >= 2
    for secret in (redis_cluster.password, CLIENT_KEY, GATEWAY_KEY):
        leaked = [key for key, value in items if secret in key or secret.encode() in value]
        assert not leaked, (secret, leaked)


async def test_a_primary_killed_under_load_fails_no_request(
    gateway_factory, fake_upstream, redis_cluster
):
    gateways = _three(gateway_factory, redis_cluster, fake_upstream.url)
    urls = [gateway.url for gateway in gateways]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        assert await all_up(session, urls)
        for text in PROMPTS:
            assert (await ask(session, urls[0], text))[0] == 200
        assert await until(lambda: _stored(redis_cluster, len(PROMPTS)), 5.0)
        victim = max(
            redis_cluster.primaries(),
            key=lambda node: len(redis_cluster.keys_by_primary("pr:*").get(node.port, [])),
        )
        before = redis_cluster.keys_by_primary("pr:*")[victim.port]
        assert before
        # Those writes reached the victim's replica (asynchronous replication).
        await asyncio.to_thread(redis_cluster.wait_replicated)

        async def kill_soon() -> None:
            await asyncio.sleep(2.0)
            redis_cluster.kill(victim)

        statuses, _ = await asyncio.gather(load(session, urls, 6.0, repeated=PROMPTS), kill_soon())
        assert len(statuses) > 50 and statuses == [200] * len(statuses)
        await asyncio.to_thread(redis_cluster.wait_promoted, victim)
        # A tier that flapped during the failover probes at most every Backoff().cap
        # seconds: allow one full cool-off plus a slow probe on a busy machine.
        assert await until(lambda: _every_redis_up(session, urls), Backoff().cap + 15.0), (
            "Redis must come back up on every instance after the promotion"
        )
        # A fresh instance has nothing in memory: its answers come from the cluster.
        fresh = gateway_factory(**cluster_settings(redis_cluster, fake_upstream.url))
        assert await all_up(session, [fresh.url])
        answers = [await ask(session, fresh.url, text) for text in PROMPTS]
        assert answers == [(200, "HIT")] * len(PROMPTS)


async def _every_redis_up(session: aiohttp.ClientSession, urls: list[str]) -> bool:
    states = [(await health(session, url))["redis"] for url in urls]
    return states == ["up"] * len(urls)
