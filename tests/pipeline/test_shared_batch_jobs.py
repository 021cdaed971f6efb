"""Async batch jobs in one shared Redis: any instance answers a poll, results fetched once."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import redis

from tests.batch_jobs_client import poll, results_fetches, submit
from tests.fixtures_redis import RedisServer
from tests.fixtures_topologies import _dump as dump_node

ALICE, BOB = "alice-key-7e41c0", "bob-key-2a9d55"
GATEWAY_KEY = "sk-ant-gw-81f3d2"


def _gateway(gateway_factory: Any, fake_url: str, redis_url: str, **extra: Any) -> Any:
    options: dict[str, Any] = {
        "anthropic_api_key": GATEWAY_KEY,
        "anthropic_base_url": fake_url,
        "upstream_retries": 0,
        "redis_enabled": True,
        "redis_url": redis_url,
        "promptrelay_api_keys": f"{ALICE},{BOB}",
        # A slow answer on a busy machine must not be a timeout (then a submit or a poll is
        # a 503, rightly): these tests are about sharing, not about a Redis that hangs.
        "redis_socket_timeout": 2.0,
        "redis_connect_timeout": 1.0,
        **extra,
    }
    return gateway_factory(**{k: v for k, v in options.items() if v is not None})


def _record_key(job_id: str) -> str:
    return f"promptrelay:batch:{{{job_id}}}"


def _everything(server: RedisServer) -> list[tuple[str, bytes]]:
    """Every key and its value's bytes (the scan the cluster tests make of every node)."""
    return dump_node(server.port, server.password)


async def test_a_job_made_on_one_instance_is_polled_to_its_end_on_the_other(
    gateway_factory, fake_upstream, redis_server
):
    fake_upstream.configure(batch_processing_ms=300)
    one, two = (
        _gateway(gateway_factory, fake_upstream.url, redis_server.url, batch_jobs_ttl=600)
        for _ in range(2)
    )
    alice, bob = {"x-api-key": ALICE}, {"x-api-key": BOB}
    items = [{"prompt": "shared batch A"}, {"prompt": "shared batch B"}]
    async with aiohttp.ClientSession() as session:
        status, job = await submit(session, one.url, items, alice)
        assert status == 202 and job["status"] == "in_progress", job
        with redis.Redis.from_url(redis_server.url) as client:
            ttl = client.pttl(_record_key(job["id"]))  # written before the 202 went out
        async with session.get(f"{two.url}/api/batches/{job['id']}", headers=bob) as r:
            assert r.status == 404  # another client key's job, on any instance
        seen, view = await poll(session, two.url, job["id"], alice)
        _, again = await poll(session, one.url, job["id"], alice)
        async with session.post(
            f"{one.url}/api/generate", json={"prompt": "shared batch B"}, headers=alice
        ) as r:
            later = r.headers["x-cache"]
    assert 590_000 < ttl <= 600_000
    assert seen[0] == "in_progress" and [item["ok"] for item in view["results"]] == [True, True]
    assert again == view  # served from Redis by the instance that did not fetch them
    assert later == "HIT"  # the result went into the shared cache
    assert results_fetches(fake_upstream.stats()) == 1
    stored = dict(_everything(redis_server))
    assert _record_key(job["id"]) in stored
    assert _record_key(job["id"]) + ":lock" not in stored  # released after the fetch
    for secret in (ALICE, BOB, GATEWAY_KEY):
        assert not [k for k, v in stored.items() if secret in k or secret.encode() in v]


async def test_concurrent_polls_on_both_fetch_the_results_once(
    gateway_factory, fake_upstream, redis_server
):
    fake_upstream.configure(batch_processing_ms=100)
    gateways = [_gateway(gateway_factory, fake_upstream.url, redis_server.url) for _ in range(2)]
    alice = {"x-api-key": ALICE}
    items = [{"prompt": f"concurrent {index}"} for index in range(5)]
    async with aiohttp.ClientSession() as session:
        status, job = await submit(session, gateways[0].url, items, alice)
        assert status == 202, job
        batch = f"{fake_upstream.url}/v1/messages/batches/{job['upstream_batch_id']}"
        for _ in range(100):  # until the upstream says it ended: every poll below may fetch
            async with session.get(batch, headers={"x-api-key": GATEWAY_KEY}) as r:
                if (await r.json())["processing_status"] == "ended":
                    break
            await asyncio.sleep(0.05)

        async def once(url: str) -> int:
            async with session.get(f"{url}/api/batches/{job['id']}", headers=alice) as r:
                return r.status

        statuses = await asyncio.gather(*(once(g.url) for g in gateways for _ in range(6)))
        views = [(await poll(session, g.url, job["id"], alice))[1] for g in gateways]
    assert statuses == [200] * 12
    assert results_fetches(fake_upstream.stats()) == 1
    assert views[0] == views[1] and views[0]["summary"]["succeeded"] == 5


async def test_a_client_own_key_polls_on_another_instance_and_is_never_stored(
    gateway_factory, fake_upstream, redis_server
):
    """Pass-through: no gateway key; the job keeps only the hash of the client's key, and
    the instance that polls asks Anthropic with the key its poller presents."""
    own, other = "sk-ant-client-own-55aa91", "sk-ant-client-other-0c3e7f"
    fake_upstream.configure(batch_processing_ms=100)
    one, two = (
        _gateway(
            gateway_factory,
            fake_upstream.url,
            redis_server.url,
            anthropic_api_key=None,
            promptrelay_api_keys=None,
        )
        for _ in range(2)
    )
    async with aiohttp.ClientSession() as session:
        status, job = await submit(session, one.url, [{"prompt": "mine"}], {"x-api-key": own})
        assert status == 202, job
        async with session.get(
            f"{two.url}/api/batches/{job['id']}", headers={"x-api-key": other}
        ) as r:
            assert r.status == 404
        _, view = await poll(session, two.url, job["id"], {"x-api-key": own})
    assert view["results"][0]["ok"] is True
    assert fake_upstream.stats()["api_keys_seen"] == [own]
    stored = _everything(redis_server)
    assert any(key == _record_key(job["id"]) for key, _ in stored)
    assert not [key for key, value in stored if own in key or own.encode() in value]


async def test_redis_down_answers_503_with_retry_after_and_sends_nothing(
    gateway_factory, fake_upstream, redis_server
):
    fake_upstream.configure(batch_processing_ms=60_000)
    gateway = _gateway(gateway_factory, fake_upstream.url, redis_server.url)
    alice = {"x-api-key": ALICE}
    async with aiohttp.ClientSession() as session:
        status, job = await submit(session, gateway.url, [{"prompt": "kept"}], alice)
        assert status == 202
        redis_server.kill()
        async with session.get(f"{gateway.url}/api/batches/{job['id']}", headers=alice) as r:
            polled = r.status, r.headers.get("retry-after"), await r.json()
        status, refused = await submit(session, gateway.url, [{"prompt": "new"}], alice)
    assert polled[:2] == (503, "2"), polled
    assert polled[2]["error"]["type"] == "api_error"
    assert "Redis" in polled[2]["error"]["message"]
    assert status == 503 and "Redis" in refused["error"]["message"]
    assert fake_upstream.stats()["by_path"]["/v1/messages/batches"] == 1  # nothing paid


async def test_a_job_over_its_size_bound_keeps_what_fits(
    gateway_factory, fake_upstream, redis_server
):
    fake_upstream.configure(batch_processing_ms=50)
    gateway = _gateway(
        gateway_factory, fake_upstream.url, redis_server.url, batch_job_max_bytes=3500
    )
    alice = {"x-api-key": ALICE}
    items = [{"prompt": "x" * 3000}, {"prompt": "short"}, {"prompt": "y" * 3000}]
    async with aiohttp.ClientSession() as session:
        status, job = await submit(session, gateway.url, items, alice)
        assert status == 202, job
        _, view = await poll(session, gateway.url, job["id"], alice)
        dropped = next(r["index"] for r in view["results"] if not r["ok"])
        async with session.post(
            f"{gateway.url}/api/generate", json=items[dropped], headers=alice
        ) as r:
            dropped_cache = r.headers["x-cache"]
    with redis.Redis.from_url(redis_server.url) as client:
        size = client.strlen(_record_key(job["id"]))
    oks = [r["ok"] for r in view["results"]]
    assert oks.count(False) == 1 and oks[1] is True  # one large result made room
    error = view["results"][dropped]["error"]
    assert error["type"] == "request_too_large" and "BATCH_JOB_MAX_BYTES" in error["message"]
    assert size <= 3500
    assert dropped_cache == "HIT"  # its answer is still in the cache


async def test_an_unreadable_job_record_is_a_404(gateway_factory, fake_upstream, redis_server):
    gateway = _gateway(gateway_factory, fake_upstream.url, redis_server.url)
    job_id = "prbatch_" + "ab" * 12
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(_record_key(job_id), b'{"id": "from another version"}')
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{gateway.url}/api/batches/{job_id}", headers={"x-api-key": ALICE}
        ) as r:
            status, body = r.status, await r.json()
    assert status == 404 and "BATCH_JOBS_TTL" in body["error"]["message"]
